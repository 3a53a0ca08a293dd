//! End to end under UEFI: blessing. A generation with boot counting boots;
//! systemd-boot has counted the try; stage 2 runs `genboot bless`, and the
//! entry loses its counter on the ESP.

use crate::support::{self, scenario::*};

#[test]
fn bless_in_stage_2_drops_the_counter_of_the_booted_entry() {
    let s = Scenario::new("e2e_bless", BUDGET);
    let k = support::kernel(support::CLOUD);
    s.stage2(&format!(
        "modprobe_out=$(/sbin/modprobe vfat 2>&1) || echo \"{MARK}vfat: $modprobe_out\"\n\
         mount -t vfat /dev/vda1 /boot/efi || echo \"{MARK}mount failed\"\n\
         for e in /boot/efi/loader/entries/*; do echo \"{MARK}before: ${{e##*/}}\"; done\n\
         genboot --esp /boot/efi bless 2>&1 | sed 's/^/{MARK}bless: /'\n\
         for e in /boot/efi/loader/entries/*; do echo \"{MARK}after: ${{e##*/}}\"; done\n\
         umount /boot/efi\n"
    ));
    let cfg = s.config("E2E counted", &k, "[boot]\ntries = 2\n");
    s.image(&[&cfg]);
    let entries = s.esp_ls("/loader/entries");
    assert!(
        entries.iter().any(|e| e == "genboot-1+2.conf"),
        "the entry should start with 2 tries: {entries:?}"
    );

    let (mut vm, _) = s.boot_expecting("bless", 1, "the only generation");
    let lines = vm.stage2_lines("");
    vm.wait_exit(BOOT);
    let said = lines.join("\n");
    // systemd-boot counted this boot before stage 2 ran.
    assert!(
        lines.iter().any(|l| l == "before: genboot-1+1-1.conf"),
        "systemd-boot should have renamed the entry to genboot-1+1-1.conf before stage 2; stage 2 said:\n{said}"
    );
    let entries = s.esp_ls("/loader/entries");
    assert!(
        entries.iter().any(|e| e == "genboot-1.conf"),
        "after `genboot bless` the entry should be genboot-1.conf; the ESP has {entries:?}; stage 2 said:\n{said}"
    );
    assert!(
        !entries.iter().any(|e| e.starts_with("genboot-1+")),
        "a counted entry is left beside the blessed one: {entries:?}"
    );
}
