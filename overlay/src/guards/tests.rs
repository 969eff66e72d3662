use super::*;
use crate::descriptor::{unix_now, ROLE_EXIT, ROLE_RELAY};
use crate::exit::ExitPolicy;
use crate::identity::Identity;

fn desc(roles: u8) -> Descriptor {
    Descriptor::new_signed(
        &Identity::generate(),
        "127.0.0.1:1".parse().unwrap(),
        roles,
        ExitPolicy::default(),
        unix_now() + 60,
    )
}

fn dir(n: usize) -> Vec<Descriptor> {
    (0..n).map(|_| desc(ROLE_RELAY)).collect()
}

fn pick(s: &mut GuardSet, d: &[Descriptor], ex: &[NodeId], now: u64) -> NodeId {
    s.pick(d, ex, now, &mut rand::thread_rng()).unwrap().0.id
}

#[test]
fn keeps_one_guard_across_circuits() {
    let d = dir(10);
    let mut s = GuardSet::default();
    let mut rng = rand::thread_rng();
    let (g, changed) = s.pick(&d, &[], 1000, &mut rng).unwrap();
    assert!(changed);
    for _ in 0..50 {
        let (g2, changed) = s.pick(&d, &[], 1000, &mut rng).unwrap();
        assert_eq!(g2.id, g.id);
        assert!(!changed);
    }
    assert_eq!(s.ids(), vec![g.id]);
}

#[test]
fn never_the_excluded_last_hop_and_falls_back_in_order() {
    let d = dir(10);
    let mut s = GuardSet::default();
    let g1 = pick(&mut s, &d, &[], 1000);
    // g1 is this circuit's exit: a second guard joins
    let g2 = pick(&mut s, &d, &[g1], 1000);
    assert_ne!(g2, g1);
    // the first guard is still preferred when it can be used
    assert_eq!(pick(&mut s, &d, &[], 1000), g1);
    // and the second is reused, not a third added, when the first is excluded again
    let (g, changed) = s.pick(&d, &[g1], 1000, &mut rand::thread_rng()).unwrap();
    assert_eq!((g.id, changed), (g2, false));
    assert_eq!(s.primary(&d), vec![g1, g2]);
}

#[test]
fn a_down_guard_is_skipped_with_backoff_then_used_again() {
    let d = dir(10);
    let mut s = GuardSet::default();
    let g1 = pick(&mut s, &d, &[], 1000);
    s.failed(&g1, 1000);
    let g2 = pick(&mut s, &d, &[], 1001);
    assert_ne!(g2, g1);
    // still down before 30 s, back after
    assert_eq!(pick(&mut s, &d, &[], 1029), g2);
    assert_eq!(pick(&mut s, &d, &[], 1030), g1);
    s.succeeded(&g1);
    // two failures in a row: the backoff doubles
    s.failed(&g1, 2000);
    s.failed(&g1, 2000);
    assert_eq!(pick(&mut s, &d, &[], 2059), g2);
    assert_eq!(pick(&mut s, &d, &[], 2060), g1);
    // success clears it
    s.failed(&g1, 3000);
    s.succeeded(&g1);
    assert_eq!(pick(&mut s, &d, &[], 3000), g1);
    assert_eq!(s.ids().len(), 2);
    let st = s.status(&d, 3000);
    assert!(st[0].primary && st[0].listed && st[0].down_for == 0);
}

/// The attack of "Hostile relays (2/2)": failures past the guard, however many, never move the
/// client to another guard; they only lower the guard's path-bias rate.
#[test]
fn failures_past_the_guard_never_rotate_it() {
    let d = dir(30);
    let mut s = GuardSet::default();
    let g1 = pick(&mut s, &d, &[], 1000);
    let mut warnings = 0;
    for i in 0..1000 {
        s.succeeded(&g1);
        warnings += usize::from(s.built(&g1, false).is_some());
        assert_eq!(pick(&mut s, &d, &[], 1000 + i), g1);
    }
    assert_eq!(s.ids(), vec![g1], "no other guard was ever sampled");
    assert_eq!(warnings, 1, "one warning, not one per circuit");
    let st = &s.status(&d, 2000)[0];
    assert!(st.path_bias.is_suspect());
    assert_eq!(st.path_bias.percent(), 0);
    assert!(
        st.path_bias.attempts < PATH_BIAS_SCALE_AT,
        "counts are scaled"
    );
}

#[test]
fn path_bias_counts_warn_once_and_recover() {
    let d = dir(5);
    let mut s = GuardSet::default();
    let g = pick(&mut s, &d, &[], 1000);
    // 60% succeed: above the threshold, never suspect
    for i in 0..100 {
        assert!(s.built(&g, i % 5 < 3).is_none());
    }
    // built circuits later destroyed for bad cells count as failures
    let mut warned = None;
    for _ in 0..40 {
        warned = warned.or(s.misbehaved(&g));
    }
    let b = warned.expect("the rate fell under the threshold");
    assert!(b.percent() < PATH_BIAS_WARN_PERCENT);
    assert!(s.misbehaved(&g).is_none(), "warned once");
    // it recovers, then a new fall warns again
    for _ in 0..200 {
        assert!(s.built(&g, true).is_none());
    }
    assert!(!s.status(&d, 1000)[0].path_bias.is_suspect());
    let again = (0..400).filter_map(|_| s.built(&g, false)).count();
    assert_eq!(again, 1);
    // too few attempts are never judged
    let mut fresh = GuardSet::default();
    let h = pick(&mut fresh, &d, &[], 1000);
    for _ in 0..PATH_BIAS_MIN_CIRCS - 1 {
        assert!(fresh.built(&h, false).is_none());
    }
    assert!(fresh.built(&h, false).is_some());
}

#[test]
fn the_sample_is_bounded_and_all_down_is_an_error_not_a_new_guard() {
    let d = dir(60);
    let mut s = GuardSet::default();
    let mut seen = std::collections::HashSet::new();
    // every guard's link fails in turn: the sample grows to SAMPLE_MAX and no further
    for i in 0..200u64 {
        match s.pick(&d, &[], 1000 + i / 10, &mut rand::thread_rng()) {
            Ok((g, _)) => {
                seen.insert(g.id);
                s.failed(&g.id, 1000 + i / 10);
            }
            Err(GuardError::AllDown { sampled, retry_in }) => {
                assert_eq!(sampled, SAMPLE_MAX);
                assert!(retry_in > 0 && retry_in <= RETRY_MAX_SECS);
            }
            Err(e) => panic!("{e}"),
        }
        assert!(s.ids().len() <= SAMPLE_MAX);
    }
    assert_eq!(
        seen.len(),
        SAMPLE_MAX,
        "first hops came from the sample only"
    );
    let e = s.pick(&d, &[], 1020, &mut rand::thread_rng()).unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");
    // once backoffs expire, the first primary serves again
    let first = s.ids()[0];
    assert_eq!(pick(&mut s, &d, &[], 1020 + RETRY_MAX_SECS), first);
}

#[test]
fn a_full_sample_makes_room_only_by_dropping_unlisted_guards() {
    let d = dir(40);
    let mut s = GuardSet::default();
    for _ in 0..SAMPLE_MAX {
        let g = pick(&mut s, &d, &[], 1000);
        s.failed(&g, 1000);
    }
    assert_eq!(s.ids().len(), SAMPLE_MAX);
    // one sampled guard leaves the directory: its place can go to a new one
    let gone = s.ids()[5];
    let without: Vec<Descriptor> = d.iter().filter(|x| x.id != gone).cloned().collect();
    let new = pick(&mut s, &without, &[], 1001);
    assert!(!s.ids().contains(&gone));
    assert_eq!(s.ids().len(), SAMPLE_MAX);
    assert_eq!(s.ids()[SAMPLE_MAX - 1], new);
}

#[test]
fn gone_from_the_directory_or_expired_means_another_guard() {
    let d = dir(10);
    let mut s = GuardSet::default();
    let g1 = pick(&mut s, &d, &[], 1000);
    let without: Vec<Descriptor> = d.iter().filter(|x| x.id != g1).cloned().collect();
    let g2 = pick(&mut s, &without, &[], 1000);
    assert_ne!(g2, g1);
    assert_eq!(s.primary(&without), vec![g2]);
    // back in the directory: preferred again
    assert_eq!(pick(&mut s, &d, &[], 1000), g1);
    // after the lifetime both are replaced
    let later = 1000 + GuardConfig::default().lifetime;
    let (g3, changed) = s.pick(&d, &[], later, &mut rand::thread_rng()).unwrap();
    assert!(changed);
    assert_eq!(s.ids(), vec![g3.id]);
}

#[test]
fn only_relays_are_guards() {
    // a node that is only an exit (no relay role) is never a guard
    let d = vec![desc(ROLE_EXIT)];
    let mut s = GuardSet::default();
    let e = s.pick(&d, &[], 1000, &mut rand::thread_rng()).unwrap_err();
    assert_eq!(e, GuardError::NoRelay);
}

#[test]
fn file_round_trip_and_bad_files() {
    let d = dir(5);
    let mut s = GuardSet::default();
    let g1 = pick(&mut s, &d, &[], 1000);
    pick(&mut s, &d, &[g1], 1000);
    for _ in 0..7 {
        s.built(&g1, false);
    }
    s.built(&g1, true);
    let back = GuardSet::decode(GuardConfig::default(), &s.encode()).unwrap();
    assert_eq!(back.ids(), s.ids());
    assert_eq!(
        back.status(&d, 1000)[0].path_bias,
        PathBias {
            attempts: 8,
            succeeded: 1
        }
    );
    // the older two-column format still reads
    let old = format!("{} 1000\n", hex::encode(g1.0));
    assert_eq!(
        GuardSet::decode(GuardConfig::default(), &old)
            .unwrap()
            .ids(),
        vec![g1]
    );
    for (text, want) in [
        ("abcd 5\n", "not 32 bytes"),
        ("zz 5\n", "not hex"),
        (&format!("{} x\n", "00".repeat(32)), "time is not a number"),
        (
            &format!("{} 5 x 1\n", "00".repeat(32)),
            "count is not a number",
        ),
        ("onlyone\n", "expected"),
    ] {
        let e = GuardSet::decode(GuardConfig::default(), text).unwrap_err();
        assert!(e.contains(want) && e.contains("line 1"), "{e}");
    }
    // through a file
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("guards");
    let g = Guards::load(&f, GuardConfig::default()).unwrap();
    let first = g.pick(&d, &[], unix_now()).unwrap();
    g.save_if_changed();
    let again = Guards::load(&f, GuardConfig::default()).unwrap();
    assert_eq!(again.ids(), vec![first.id]);
    std::fs::write(&f, "garbage\n").unwrap();
    let e = Guards::load(&f, GuardConfig::default()).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}
