//! End to end under UEFI: the systemd-boot menu lists the generations newest
//! first with readable titles, and choosing the older one with keys over the
//! serial console boots it.

use crate::support::{self, scenario::*};

/// The generation number in a title "<label> (generation N...)".
fn generation_of(title: &str) -> Option<u32> {
    let rest = &title[title.find("(generation ")? + "(generation ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn older_generation_chosen_in_the_menu_boots() {
    let s = Scenario::new("e2e_pick_generation", BUDGET);
    let k = support::kernel(support::CLOUD);
    let menu = "[boot]\ntimeout = 5\n";
    let first = s.config("E2E first", &k, menu);
    let second = s.config("E2E second", &k, menu);
    s.image(&[&first, &second]);

    let mut vm = s.boot("boot", false);
    let titles = vm.menu();
    // Readable titles, newest generation first (a recovery entry, if any,
    // sits below its own generation).
    let plain: Vec<&String> = titles.iter().filter(|t| !t.contains("Recovery")).collect();
    let expected = ["E2E second (generation 2)", "E2E first (generation 1)"];
    if plain.len() != 2 || plain.iter().zip(expected).any(|(t, e)| t.as_str() != e) {
        vm.fail(&format!(
            "the menu should list {expected:?} in this order; it shows {titles:?}"
        ));
    }
    // Recovery entries (wherever they sit) are newest first among themselves.
    let recovery: Vec<u32> = titles
        .iter()
        .filter(|t| t.contains("Recovery"))
        .filter_map(|t| generation_of(t))
        .collect();
    if recovery.windows(2).any(|w| w[0] < w[1]) {
        vm.fail(&format!(
            "recovery entries are not newest first: {titles:?}"
        ));
    }
    let target = titles
        .iter()
        .position(|t| t == "E2E first (generation 1)")
        .unwrap();
    vm.choose(target);
    s.expect_generation(&mut vm, 1, "chosen in the menu");
    vm.wait_exit(BOOT);
}
