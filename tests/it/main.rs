//! The integration tier: the real `genboot` CLI on temporary trees, with
//! the real Debian test kernels, real FAT images and real tools as judges,
//! and direct QEMU boots of the initrds genboot writes. Needs root, the
//! test kernels (`tools/fetch-kernels`), the activator
//! (`tools/build-activator`) and the tools `tools/install-deps` installs;
//! a missing one fails the test saying how to get it. One binary (built
//! only with `--features full-tests`; `tools/test` runs it):
//!
//! ```sh
//! cargo test --release --features full-tests --test it -- esp::
//! ```

#[path = "../support/mod.rs"]
mod support;

// genboot-init booted for real: direct kernel boots of a store made by
// `genboot build`, every root spec, the switches, the failure policy.
mod activator;
// The foundation through the CLI: builds, profile verbs, gc, verify,
// failpoints of the store and the profile, locks.
mod cli;
// genboot's Debian packages (tools/make-deb) installed by apt in a Debian
// root; its kernel hooks and kernel-install plugin.
mod deb;
// The ESP installer on both backends: bootctl, golden entries, limits,
// boot counting, full ESPs, crash points.
mod esp;
// Kills at the I/O layer of a FAT image: every write of an install and a
// gc, and kill -9 at 20 moments.
mod esp_crash;
// Damaged disk images: GPT, FAT chains, torn entries, foreign files.
mod hostile_image;
// Hostile module trees, firmware names, unbounded reads, ESP contents.
mod hostile_input;
// Hostile state below --root: symlinks, the booted generation, races.
mod hostile_state;
// `genboot image`: sgdisk, fsck.fat, bootctl, e2fsck; reproducible bytes.
mod image;
// Initrds: reproducible bytes, cpio as judge, golden boot.json, a boot of
// each compression on both kernels.
mod initrd;
// Module closures and kmod index files judged by kmod on real kernels.
mod modules;
// Whole-system trees: mmdebstrap builds from the local repository,
// `genboot diff`, `mount`, gc of content objects, reproducible images,
// crashes at every import failpoint, a full disk; fsck.erofs as judge.
mod tree;
