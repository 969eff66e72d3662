#!/usr/bin/env python3
"""Splits a tcpdump capture of a real BitTorrent session on lo into fuzz seeds.

    split_capture.py CAPTURE.pcap CORPUS_DIR

From each TCP direction it rebuilds the byte stream (by sequence number) and writes:
  peer_wire/   the opening of each peer connection (handshake + messages up to the first piece)
               and one real message of every message id seen (chunk selector byte 0 first)
  ut_metadata/ the payload of every distinct extended message (ext handshake, ut_metadata)
  tracker/     the tracker's HTTP responses
  tun_packet/  a few raw IPv4 packets of each TCP flag combination
Standard library only (pcap, Ethernet/"Linux cooked" link types).
"""
import hashlib
import os
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    else:
        e = ">"
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == 1:  # Ethernet
            if len(frame) < 14 or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
        elif linktype == 113:  # Linux cooked v1
            if len(frame) < 16 or frame[14:16] != b"\x08\x00":
                continue
            ip = frame[16:]
        elif linktype in (101, 228):  # raw IPv4
            ip = frame
        else:
            continue
        yield ip


def parse_tcp(ip):
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 15) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    seg = ip[ihl:total]
    if len(seg) < 20:
        return None
    sport, dport, seq = struct.unpack(">HHI", seg[:8])
    doff = (seg[12] >> 4) * 4
    flags = seg[13]
    src = ".".join(map(str, ip[12:16]))
    dst = ".".join(map(str, ip[16:20]))
    return (src, sport, dst, dport), seq, flags, seg[doff:]


def streams(path):
    """direction -> bytes, in sequence order; also the raw IPv4 packets."""
    segs = {}
    raw = []
    for ip in packets(path):
        p = parse_tcp(ip)
        if p is None:
            continue
        key, seq, flags, payload = p
        raw.append((flags, ip))
        if flags & 0x02:  # SYN: stream starts at seq+1
            segs.setdefault(key, {"isn": seq + 1, "parts": {}})
            continue
        s = segs.setdefault(key, {"isn": None, "parts": {}})
        if payload:
            s["parts"].setdefault(seq, payload)
    out = {}
    for key, s in segs.items():
        if not s["parts"]:
            continue
        base = s["isn"] if s["isn"] is not None else min(s["parts"])
        buf = bytearray()
        for seq in sorted(s["parts"], key=lambda q: (q - base) & 0xFFFFFFFF):
            rel = (seq - base) & 0xFFFFFFFF
            part = s["parts"][seq]
            if rel > len(buf):
                break  # a hole: stop here
            buf += part[len(buf) - rel:]
        out[key] = bytes(buf)
    return out, raw


def bt_messages(stream):
    """(handshake, [(id or None, whole message bytes)]) or None."""
    if len(stream) < 68 or stream[0] != 19 or stream[1:20] != b"BitTorrent protocol":
        return None
    hs, rest, msgs, off = stream[:68], stream[68:], [], 0
    while off + 4 <= len(rest):
        n = struct.unpack(">I", rest[off:off + 4])[0]
        if off + 4 + n > len(rest):
            break
        m = rest[off:off + 4 + n]
        msgs.append((m[4] if n else None, m))
        off += 4 + n
    return hs, msgs


def put(root, target, name, data, seen):
    h = hashlib.sha1(data).hexdigest()[:12]
    if (target, h) in seen:
        return
    seen.add((target, h))
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"cap-{name}-{h}"), "wb") as f:
        f.write(data)


def main():
    cap, root = sys.argv[1], sys.argv[2]
    out, raw = streams(cap)
    seen, n = set(), 0
    ids_done = set()
    for key, data in sorted(out.items()):
        msgs = bt_messages(data)
        if msgs is not None:
            hs, ms = msgs
            opening = bytearray(hs)
            for mid, m in ms:
                if mid == 7:
                    break
                opening += m
            put(root, "peer_wire", "opening", b"\x00" + bytes(opening), seen)
            for mid, m in ms:
                if mid not in ids_done:
                    ids_done.add(mid)
                    put(root, "peer_wire", f"msg{mid}", b"\x00" + m, seen)
                if mid == 20 and len(m) > 6:
                    put(root, "ut_metadata", f"ext{m[5]}", m[6:], seen)
            n += 1
        elif data.startswith(b"HTTP/1."):
            put(root, "tracker", "http", data[:4096], seen)
            n += 1
    per_flags = {}
    for flags, ip in raw:
        if per_flags.get(flags, 0) < 2 and len(ip) <= 2048:
            per_flags[flags] = per_flags.get(flags, 0) + 1
            put(root, "tun_packet", f"tcp{flags:02x}", ip, seen)
    print(f"{n} streams, {len(seen)} seeds written under {root}")


if __name__ == "__main__":
    main()
