//! Verbs that touch the ESP or the firmware: install, image, bless,
//! set-oneshot, status; and the install that follows every profile change.

use super::Ctx;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Called after every profile change (switch, rollback, set-default,
/// delete, gc): install right away when an ESP is configured or given.
pub(super) fn after_profile_change(
    _ctx: &Ctx,
    _configured_esp: Option<&Path>,
) -> anyhow::Result<()> {
    Ok(())
}

pub(super) fn install(_ctx: &Ctx, _loader: Option<&Path>) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`genboot install` is not implemented yet")
}

pub(super) fn image(
    _ctx: &Ctx,
    _configs: &[PathBuf],
    _output: &Path,
    _size: &str,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`genboot image` is not implemented yet")
}

pub(super) fn bless(_ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`genboot bless` is not implemented yet")
}

pub(super) fn set_oneshot(_ctx: &Ctx, _number: u32) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`genboot set-oneshot` is not implemented yet")
}

pub(super) fn status(_ctx: &Ctx, _json: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`genboot status` is not implemented yet")
}

/// The generation this machine booted, if genboot-init recorded one.
pub(super) fn booted_generation(_ctx: &Ctx) -> Option<u32> {
    None
}
