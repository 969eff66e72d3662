//! Checks the test harness itself: namespaces, veth links and captures clean up and see traffic.

use std::time::Duration;
use warren_tests::{capture, is_root, Capture, Netns, Veth};

#[test]
fn netns_veth_and_capture_work_and_clean_up() {
    if !is_root() || !warren_tests::have("tcpdump") {
        eprintln!("SKIP: needs root and tcpdump (installed by .ci/run)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name;
    {
        let a = Netns::new("h").unwrap();
        let b = Netns::new("h").unwrap();
        name = a.name.clone();
        let v = Veth::connect(&a, &b, 1).unwrap();
        assert!(a.links().unwrap().contains(&v.a_if));
        let cap = Capture::start(&a, &v.a_if, dir.path()).unwrap();
        let out = a.sh(&format!("python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('{}', 9999))\"", v.b_addr)).unwrap();
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(Duration::from_millis(200));
        let pkts = cap.stop().unwrap();
        let dests = capture::destinations_from(&pkts, &format!("{}.", v.a_addr));
        assert!(dests.contains(&format!("{}.9999", v.b_addr)), "{pkts:?}");
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&name),
        "namespace left behind"
    );
}
