//! End to end under UEFI: `genboot install --install-loader` on a machine
//! whose firmware starts another loader first (issue 13). The OVMF
//! variable store starts with `Boot0000`, "GRUB" at
//! `\EFI\debian\grubx64.efi`, first in `BootOrder` (made with
//! `virt-fw-vars`; the file is a copy of systemd-boot, so that boot comes
//! up too). Stage 2 runs `genboot install --install-loader`; then the store
//! (read by `virt-fw-vars`, not by genboot) holds a "Linux Boot Manager"
//! entry for the ESP's partition and `\EFI\systemd\systemd-bootx64.efi`,
//! first in `BootOrder`, and the next boot is started from it
//! (`BootCurrent`).

use crate::support::{self, judges, scenario::*};
use std::path::Path;
use std::process::Command;

const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

#[test]
fn install_loader_registers_systemd_boot_first_in_the_firmware_boot_order() {
    let s = Scenario::new("e2e_install_loader", BUDGET);
    support::require_tool("virt-fw-vars", "virt-firmware (pip; `tools/install-deps`)");
    let k = support::kernel(support::CLOUD);
    let var = |name: &str| format!("/sys/firmware/efi/efivars/{name}-{GLOBAL}");
    s.stage2(&format!(
        "hex() {{ [ -e \"$1\" ] && hexdump -v -e '1/2 \"%04X\" \" \"' \"$1\" | cut -d' ' -f3-; }}\n\
         ls /sys/firmware/efi/efivars | grep -E '^Boot' | sed 's/^/{MARK}var: /'\n\
         echo \"{MARK}boot-current=$(hex {current})\"\n\
         echo \"{MARK}boot-order-before=$(hex {order})\"\n\
         if [ ! -e /var/lib/e2e-registered ]; then\n\
           /sbin/modprobe vfat 2>&1 | sed 's/^/{MARK}vfat: /'\n\
           mount -t vfat /dev/vda1 /boot/efi || echo \"{MARK}mount failed\"\n\
           genboot --esp /boot/efi install --install-loader \\\n\
             --loader /boot/efi/EFI/systemd/systemd-bootx64.efi 2>&1 | sed 's/^/{MARK}install: /'\n\
           umount /boot/efi\n\
           touch /var/lib/e2e-registered; sync\n\
         fi\n\
         echo \"{MARK}boot-order-after=$(hex {order})\"\n",
        current = var("BootCurrent"),
        order = var("BootOrder"),
    ));
    let cfg = s.config("E2E loader", &k, "");
    s.image(&[&cfg]);
    // Another loader on the ESP, and the firmware's entry for it, first.
    judges::mtool("mmd", &s.image, &["::/EFI/debian"]);
    judges::mcopy_to(
        &s.image,
        Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        "::/EFI/debian/grubx64.efi",
    );
    let vars = s.dir.join("OVMF_VARS.fd");
    let o = Command::new("virt-fw-vars")
        .arg("-i")
        .arg(crate::support::vm::OVMF_VARS)
        .args(["--append-boot-filepath", "\\EFI\\debian\\grubx64.efi"])
        .arg("-o")
        .arg(&vars)
        .output()
        .expect("virt-fw-vars runs");
    assert!(o.status.success(), "virt-fw-vars: {}", support::stderr(&o));
    let before = print_vars(&vars);
    assert!(
        before
            .lines()
            .any(|l| l.starts_with("BootOrder") && l.trim_end().ends_with(": boot order: 0000")),
        "the store should start with Boot0000 alone in BootOrder:\n{before}"
    );

    let mut vm = s.boot_with_vars("first", &vars);
    s.expect_generation(&mut vm, 1, "the only generation");
    let lines = vm.stage2_lines("");
    vm.wait_exit(BOOT);
    let said = lines.join("\n");
    let field = |k: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    assert_eq!(
        field("boot-current="),
        "0000",
        "the first boot should come from the other loader's entry; stage 2 said:\n{said}"
    );
    let installed: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("install: "))
        .collect();
    assert!(
        installed
            .iter()
            .any(|l| l.contains("firmware boot entry Boot")),
        "`genboot install --install-loader` should register a boot entry; stage 2 said:\n{said}"
    );
    let after: Vec<String> = field("boot-order-after=")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let ours = after.first().cloned().unwrap_or_default();
    assert!(
        !ours.is_empty() && ours != "0000" && after.contains(&"0000".to_string()),
        "BootOrder should start with genboot's entry and keep the other loader's; stage 2 said:\n{said}"
    );

    // The variables persisted in the store, as a tool other than genboot reads them.
    let stored = print_vars(&vars);
    let entry = stored
        .lines()
        .find(|l| l.starts_with(&format!("Boot{ours}")))
        .unwrap_or_else(|| panic!("no Boot{ours} in the store:\n{stored}"));
    assert!(
        entry.contains("Linux Boot Manager")
            && entry.contains("\\EFI\\systemd\\systemd-bootx64.efi"),
        "Boot{ours} should be systemd-boot on the ESP:\n{entry}"
    );
    // virt-fw-vars prints the partition number only; its JSON has the
    // bytes: the hard drive node names the ESP's GUID (firmware byte order).
    let json = vars_json(&vars);
    let data = json["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == format!("Boot{ours}") && v["guid"] == GLOBAL)
        .and_then(|v| v["data"].as_str())
        .unwrap_or_else(|| panic!("no Boot{ours} in the JSON: {json}"))
        .to_ascii_lowercase();
    let guid_le = "00707365000000408000000000000001";
    assert!(
        data.contains(guid_le),
        "Boot{ours} should name the ESP's PARTUUID {ESP_PARTUUID} ({guid_le}): {data}"
    );
    let order = stored
        .lines()
        .find(|l| l.starts_with("BootOrder"))
        .unwrap_or("");
    assert!(
        order.contains(&format!("boot order: {ours}")),
        "BootOrder in the store should start with {ours}:\n{stored}"
    );

    // The next boot is started from it.
    let mut vm = s.boot_with_vars("second", &vars);
    s.expect_generation(&mut vm, 1, "the only generation");
    let lines = vm.stage2_lines("");
    vm.wait_exit(BOOT);
    let current = lines
        .iter()
        .find_map(|l| l.strip_prefix("boot-current="))
        .unwrap_or("")
        .trim()
        .to_string();
    assert_eq!(
        current,
        ours,
        "the firmware should start the next boot from genboot's entry; stage 2 said:\n{}",
        lines.join("\n")
    );
}

/// `virt-fw-vars --print` of an OVMF variable store.
fn print_vars(vars: &Path) -> String {
    let o = Command::new("virt-fw-vars")
        .arg("-i")
        .arg(vars)
        .arg("--print")
        .output()
        .expect("virt-fw-vars runs");
    assert!(o.status.success(), "virt-fw-vars: {}", support::stderr(&o));
    support::stdout(&o)
}

/// `virt-fw-vars --output-json` of an OVMF variable store.
fn vars_json(vars: &Path) -> serde_json::Value {
    let out = vars.with_extension("json");
    let o = Command::new("virt-fw-vars")
        .arg("-i")
        .arg(vars)
        .arg("--output-json")
        .arg(&out)
        .output()
        .expect("virt-fw-vars runs");
    assert!(o.status.success(), "virt-fw-vars: {}", support::stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}
