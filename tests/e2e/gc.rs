//! End to end under UEFI: `genboot gc --keep 1` on the image leaves only the
//! kept generation in the boot menu and nothing unreferenced on the ESP
//! (judged by `bootctl list` on a copy), and the machine still boots it.

use crate::support::{self, scenario::*};
use std::collections::BTreeSet;

#[test]
fn gc_keep_1_leaves_only_the_kept_generation_on_the_esp_and_in_the_menu() {
    let s = Scenario::new("e2e_gc", BUDGET);
    let k = support::kernel(support::CLOUD);
    let menu = "[boot]\ntimeout = 3\n";
    // Generation 1 has its own initrd (one more module), so collecting it
    // must remove a file from the ESP.
    let mut mods = INITRD_MODULES.to_vec();
    mods.push("isofs");
    let first = s.config_with("E2E first", &k, &mods, menu);
    let second = s.config("E2E second", &k, menu);
    let third = s.config("E2E third", &k, menu);
    s.image(&[&first, &second, &third]);
    let files_before = s.esp_ls("/EFI/genboot");

    s.genboot(&["gc", "--keep", "1"]);

    let entries = s.esp_ls("/loader/entries");
    let stale: Vec<&String> = entries
        .iter()
        .filter(|e| !e.starts_with("genboot-3"))
        .collect();
    assert!(
        stale.is_empty(),
        "after `gc --keep 1` only generation 3's entries may remain; stale: {stale:?}"
    );
    assert!(
        entries.iter().any(|e| e.starts_with("genboot-3")),
        "generation 3's entry is gone: {entries:?}"
    );

    // Judge the ESP: bootctl finds every file, and every file under
    // /EFI/genboot is referenced by an entry.
    let copy = s.esp_copy();
    let list = copy.bootctl_list();
    assert!(
        !list.contains("No such file") && !list.to_lowercase().contains("missing"),
        "bootctl list finds missing files:\n{list}"
    );
    let mut referenced = BTreeSet::new();
    for e in &entries {
        let text = std::fs::read_to_string(copy.dir.join("loader/entries").join(e)).unwrap();
        for l in text.lines() {
            if let Some(p) = l
                .strip_prefix("linux ")
                .or_else(|| l.strip_prefix("initrd "))
            {
                referenced.insert(p.trim().replace('\\', "/"));
            }
        }
    }
    let unreferenced: Vec<String> = copy
        .files()
        .into_iter()
        .filter(|f| f.starts_with("/EFI/genboot/") && !referenced.contains(f))
        .collect();
    assert!(
        unreferenced.is_empty(),
        "files under /EFI/genboot that no entry references: {unreferenced:?} (before gc: {files_before:?})"
    );
    let files_after = s.esp_ls("/EFI/genboot");
    assert!(
        files_after.len() < files_before.len(),
        "gc removed no file from /EFI/genboot: {files_after:?}"
    );
    drop(copy);

    let mut vm = s.boot("after-gc", false);
    let titles = vm.menu();
    if titles.iter().any(|t| !t.contains("(generation 3")) {
        vm.fail(&format!(
            "the menu still lists collected generations: {titles:?}"
        ));
    }
    s.expect_generation(&mut vm, 3, "after gc");
    vm.wait_exit(BOOT);
}
