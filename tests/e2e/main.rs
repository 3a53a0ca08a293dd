//! The end-to-end tier: disk images written by the real `genboot image`,
//! booted under QEMU (TCG) + OVMF + systemd-boot with Debian's kernels,
//! read on the serial console (`crate::support::scenario`). Needs what the
//! integration tier needs plus OVMF, systemd-boot and the local Debian
//! repository (`tools/install-deps`). One binary (built only with
//! `--features full-tests`; `tools/test` runs it):
//!
//! ```sh
//! cargo test --release --features full-tests --test e2e -- fallback
//! ```

#[path = "../support/mod.rs"]
mod support;

// `gc --keep 1` leaves one generation in the menu and nothing unreferenced.
mod gc;
// systemd-boot counts the try; `genboot bless` in stage 2 drops the counter.
mod bless;
// An install killed right after loader.conf moved still boots; one re-run cleans up.
mod crash_leftover;
// A real Debian 12 root with systemd boots to multi-user.target; the
// local package repository's tooling.
mod debian;
// The newest generation boots by default; `genboot status` names it.
mod default_boot;
// `install --install-loader` puts systemd-boot first in the firmware's BootOrder.
mod install_loader;
// A generation that fails uses up its tries; systemd-boot falls back.
mod fallback;
// Each generation boots its own kernel; kmod loads modules in stage 2.
mod kernel_upgrade;
// The menu lists generations newest first; arrow keys pick an older one.
mod pick_generation;
// The recovery entry asks for root's password, then gives a shell with a read-only root.
mod recovery;
// `genboot rollback` on the image; the next boot is the previous generation.
mod rollback;
// Whole-system generations (Debian trees with systemd) on 6.1 and 6.12: boot, upgrade, roll back, fall back, recover.
mod trees;
