#!/usr/bin/python3
"""warren test helper: libtorrent (python3-libtorrent) seeder/leecher, loopback only.
usage: lt_node.py seed  <torrent> <save_dir> <ip> <port> [peer_ip:port]
       lt_node.py leech <torrent-or-magnet> <save_dir> <ip> <port> [peer_ip:port]
Prints 'READY', then for leech 'RESULT bytes=.. seconds=.. MBps=..' and exits when complete.
DHT, LSD, UPnP, NAT-PMP, uTP and PEX are off."""
import sys, time, libtorrent as lt
mode, src, save, ip, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
peer = sys.argv[6] if len(sys.argv) > 6 else None
s = lt.session({
    'listen_interfaces': f'{ip}:{port}',
    'outgoing_interfaces': ip,
    'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
    'enable_incoming_utp': False, 'enable_outgoing_utp': False,
    'allow_multiple_connections_per_ip': True,
    'alert_mask': lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
    'ssrf_mitigation': False, 'announce_to_all_trackers': True, 'announce_ip': ip,
    'in_enc_policy': 1, 'out_enc_policy': 1,
})
try:
    s.add_extension('ut_metadata')
except Exception:
    pass
if src.startswith('magnet:'):
    p = lt.parse_magnet_uri(src)
else:
    p = lt.add_torrent_params(); p.ti = lt.torrent_info(src)
p.save_path = save
if mode == 'seed':
    p.flags |= lt.torrent_flags.seed_mode
p.flags &= ~lt.torrent_flags.auto_managed
p.flags &= ~lt.torrent_flags.paused
h = s.add_torrent(p)
t0 = time.time()
if peer:
    hst, prt = peer.rsplit(':', 1); h.connect_peer((hst, int(prt)))
print('READY', flush=True)
if mode == 'seed':
    while True:
        time.sleep(1)
        for a in s.pop_alerts():
            if a.category() & lt.alert.category_t.error_notification: print('ALERT', a.message(), file=sys.stderr, flush=True)
while True:
    time.sleep(0.1); st = h.status()
    if st.is_seeding or st.state == lt.torrent_status.seeding: break
    if peer and st.num_peers == 0 and int((time.time()-t0)*10) % 20 == 0:
        h.connect_peer((hst, int(prt)))
el = time.time() - t0
size = h.torrent_file().total_size()
print(f'RESULT bytes={size} seconds={el:.2f} MBps={size/el/1e6:.1f}', flush=True)
