//! `genboot image`: switch to each configuration (as `switch` does), then
//! write a GPT disk image holding an ESP with the boot menu and a root
//! file system with the tree below `--root`. The profile lock is held from
//! the first build to the last byte of the image; when writing the image
//! fails, the profile is put back as it was.
//!
//! With `--root DIR` the image must be written outside DIR (it would copy
//! itself). With `--root /` (a running system, or inside a chroot) the root
//! partition holds the root file system alone, without what is mounted on
//! it ([`image::Tree::RootFs`]); an output on that file system is written
//! as an unnamed file ([`fsutil::create_unnamed`]) and named only when it
//! is complete, so the copy never sees it.

use super::settings::Settings;
use super::switch::build_and_add;
use super::{AppError, Locked, Session};
use crate::esp::fat::{self as fat_image, ImageEsp};
use crate::fsutil;
use crate::gpt::{self, Part, MIB};
use crate::image;
use crate::notes::Note;
use crate::store::{LockKind, Store};
use std::path::{Path, PathBuf};

/// The systemd-boot binary an image gets.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// `--size`: fixed, or what the ESP and the tree need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSize {
    Auto,
    /// Bytes, and the text the user gave (for messages).
    Fixed(u64, String),
}

/// What `image` is asked to do.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub configs: Vec<PathBuf>,
    pub output: PathBuf,
    pub size: ImageSize,
    pub esp_size: u64,
    /// The `--esp-size` text, for messages.
    pub esp_size_text: String,
}

/// What `image` wrote.
#[derive(Debug, Clone)]
pub struct ImageMade {
    pub output: PathBuf,
    pub size: u64,
    /// The root partition's size, and what the tree below `--root` takes
    /// of it (an estimate: files in whole 4 KiB blocks, ext4's metadata).
    pub root_len: u64,
    pub root_used: u64,
    /// Free bytes on the ESP after the install.
    pub esp_free: u64,
    /// What one more kernel would need, judged by the biggest generation.
    pub next_kernel: NextKernel,
}

/// What one more kernel like the biggest one in the profile takes: on the
/// ESP its kernel and initrd; on the root its kernel and module tree twice
/// (the distribution's package installs them into the tree, a generation
/// copies them into the store) and its initrd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextKernel {
    pub esp: u64,
    pub root: u64,
}

impl NextKernel {
    /// Judged by the generations of `locked`'s profile.
    fn of(locked: &Locked) -> anyhow::Result<NextKernel> {
        let store = Store::open_read_only(&locked.session.state);
        let mut next = NextKernel::default();
        for g in locked.profile.generations()? {
            let dir = store.path(&g.target);
            let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
            let (kernel, initrd) = (size("kernel"), size("initrd"));
            // The module tree's store object (a link in the generation).
            let modules = match std::fs::canonicalize(dir.join("kernel-modules")) {
                Ok(p) if p.starts_with(&store.dir) => image::tree_bytes(image::Tree::Dir(&p))?,
                _ => 0,
            };
            next.esp = next.esp.max(kernel + initrd);
            next.root = next.root.max(2 * (kernel + modules) + initrd);
        }
        Ok(next)
    }
}

/// Refuse sizes and places that cannot work, before anything is built.
fn check_request(s: &Session, req: &ImageRequest) -> anyhow::Result<()> {
    if let ImageSize::Fixed(size, _) = req.size {
        gpt::layout(size, req.esp_size)?;
    }
    if req.esp_size < fat_image::MIN_ESP_BYTES {
        return Err(AppError::EspTooSmall {
            text: req.esp_size_text.clone(),
            size: req.esp_size,
        }
        .into());
    }
    let parent = req.output.parent().unwrap_or(Path::new("."));
    if whole_root_fs(s) {
        return Ok(());
    }
    if let (Ok(o), Ok(r)) = (
        std::fs::canonicalize(parent),
        std::fs::canonicalize(&s.state.root),
    ) {
        if o.starts_with(&r) {
            return Err(AppError::ImageInsideRoot {
                output: req.output.clone(),
                root: r,
            }
            .into());
        }
    }
    Ok(())
}

/// `--root /`: the image holds the root file system alone.
fn whole_root_fs(s: &Session) -> bool {
    s.state.root == Path::new("/")
}

/// What the root partition holds.
fn tree<'s>(s: &'s Session) -> image::Tree<'s> {
    if whole_root_fs(s) {
        image::Tree::RootFs
    } else {
        image::Tree::Dir(&s.state.root)
    }
}

/// The image file while it is written.
struct Output {
    /// The unnamed file, when the output is on the root file system the
    /// image copies.
    unnamed: Option<std::fs::File>,
    /// The path genboot opens it by.
    io: PathBuf,
    /// The path `mke2fs` (a child process) opens it by.
    tool: PathBuf,
}

impl Output {
    fn new(s: &Session, output: &Path) -> anyhow::Result<Output> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let hidden = whole_root_fs(s) && dev(dir).is_some() && dev(dir) == dev(Path::new("/"));
        if !hidden {
            return Ok(Output {
                unnamed: None,
                io: output.to_path_buf(),
                tool: output.to_path_buf(),
            });
        }
        if std::fs::symlink_metadata(output).is_ok() {
            // It would be copied into the new image's root file system.
            std::fs::remove_file(output)
                .map_err(fsutil::IoError::at("remove the old image", output))?;
            s.notes().note(Note::Info(&format!(
                "removed the old {} first: it is on the root file system the image copies",
                output.display()
            )));
        }
        let file = fsutil::create_unnamed(dir, 0o644)?;
        let fd = file.as_raw_fd();
        Ok(Output {
            unnamed: Some(file),
            io: PathBuf::from(format!("/proc/self/fd/{fd}")),
            tool: PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id())),
        })
    }

    /// Name the finished image `output`.
    fn finish(self, output: &Path) -> anyhow::Result<()> {
        if let Some(f) = &self.unnamed {
            fsutil::link_unnamed(f, output)?;
        }
        Ok(())
    }
}

/// `genboot image` (see the module documentation).
pub fn image(s: &Session, req: &ImageRequest) -> anyhow::Result<ImageMade> {
    check_request(s, req)?;
    // Without --config: the system's own configuration when it has one,
    // else the profile as it is.
    let default = s.state.in_root(Path::new(super::switch::DEFAULT_CONFIG))?;
    let configs = if req.configs.is_empty() && default.is_file() {
        vec![default]
    } else {
        req.configs.clone()
    };
    // Every configuration is read and checked before anything is built.
    let loaded = configs
        .iter()
        .map(|c| super::switch::load_config(s, c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Nothing to build and nothing built: refused before anything is written.
    if loaded.is_empty()
        && crate::profile::Profile::new(&s.state)
            .current_number()
            .ok()
            .flatten()
            .is_none()
    {
        return Err(AppError::NothingToImage(s.state.root.clone()).into());
    }
    let store = Store::open(&s.state)?;
    let locked = s.lock()?;
    let store_lock = store.lock(LockKind::Shared, s.wait())?;
    let before = locked.profile.generations()?;
    let result = (|| {
        for (c, cfg) in configs.iter().zip(&loaded) {
            build_and_add(&locked, &store, &store_lock, c, cfg)?;
        }
        if locked.profile.current_number()?.is_none() {
            return Err(AppError::NothingToImage(s.state.root.clone()).into());
        }
        let settings = match loaded.last() {
            Some(cfg) => Settings::from_boot(&cfg.boot),
            None => Settings::load(&s.state)?,
        };
        let made = write_image(&locked, req, &settings)?;
        if loaded.last().is_some() {
            settings.save(&s.state, &locked.lock)?;
        }
        Ok(made)
    })();
    match result {
        Ok(made) => Ok(made),
        Err(e) if loaded.is_empty() => Err(e),
        Err(e) => Err(put_back(&locked, &before, e)),
    }
}

/// After a failed image: the profile as it was before, and an error that
/// says so.
fn put_back(
    locked: &Locked,
    before: &[crate::profile::Generation],
    e: anyhow::Error,
) -> anyhow::Error {
    let was = before
        .iter()
        .find(|g| g.current)
        .map_or("none".to_string(), |g| g.number.to_string());
    match locked.profile.restore(before, &locked.lock) {
        Ok(()) => e.context(format!(
            "the image was not written, so the profile was put back as it was (current generation: {was})"
        )),
        Err(re) => e.context(format!(
            "the image was not written, and putting the profile back failed too ({})",
            crate::hint::Hint::with_hint(&re)
        )),
    }
}

/// The image size: the one asked for (when the tree fits), or what the
/// ESP and the tree need plus room for one more kernel (`next`). The root
/// file system must hold the whole tree (the store holds every
/// generation's kernel modules). Returns the size and the root's need.
fn image_size(s: &Session, req: &ImageRequest, next: NextKernel) -> anyhow::Result<(u64, u64)> {
    let root_need = image::root_size_for(tree(s))?;
    let size = match &req.size {
        ImageSize::Fixed(size, text) => {
            let (_, root) = gpt::layout(*size, req.esp_size)?;
            if root.len < root_need {
                return Err(AppError::RootTooSmall {
                    text: text.clone(),
                    root: root.len,
                    tree: s.state.root.clone(),
                    need: root_need,
                    esp_size: req.esp_size,
                }
                .into());
            }
            *size
        }
        ImageSize::Auto => (root_need + next.root + req.esp_size + (2 << 20)).div_ceil(MIB) * MIB,
    };
    Ok((size, root_need))
}

/// An empty `/efi` in the root file system, where systemd's gpt-auto
/// generator mounts the ESP at boot (it mounts nothing at a directory that
/// is not empty, and uses `/boot` only when `/efi` is missing). Made in
/// the tree below `--root` when it has none; one that is not an empty
/// directory is left alone, with a warning.
fn efi_mount_point(s: &Session) -> anyhow::Result<()> {
    use crate::notes::{Note, Notes};
    let efi = s.state.in_root(Path::new("/efi"))?;
    match std::fs::symlink_metadata(&efi) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&efi).map_err(crate::fsutil::IoError::at("create", &efi))?;
        }
        Ok(m) if m.is_dir() && std::fs::read_dir(&efi).is_ok_and(|mut d| d.next().is_none()) => {}
        _ => s.note(Note::Warning(&format!(
            "{} is not an empty directory, so systemd will not mount the ESP there at boot; genboot finds it only where it is mounted (or give --esp)",
            efi.display()
        ))),
    }
    Ok(())
}

/// Warn when the image leaves no room for one more kernel, and say how to
/// grow it.
fn warn_room(s: &Session, req: &ImageRequest, m: &ImageMade) {
    use crate::notes::{Note, Notes};
    use crate::units::human;
    let root_free = m.root_len.saturating_sub(m.root_used);
    if root_free < m.next_kernel.root {
        s.note(Note::Warning(&format!(
            "the root partition of {} has about {} free, less than one more kernel like the biggest here needs ({}: its package's files and the generation's copy); make the image again with a larger --size (or without --size: auto leaves that room), or grow it later: `truncate -s +1G IMAGE`, `sgdisk -e IMAGE`, then grow partition 2 and its ext4 (`growpart`, `resize2fs`) in the booted system",
            m.output.display(),
            human(root_free),
            human(m.next_kernel.root)
        )));
    }
    if m.esp_free < m.next_kernel.esp {
        s.note(Note::Warning(&format!(
            "the ESP of {} has {} free, less than one more kernel and initrd need ({}); make the image again with a larger --esp-size (it is {} now)",
            m.output.display(),
            human(m.esp_free),
            human(m.next_kernel.esp),
            req.esp_size_text
        )));
    }
}

fn write_image(
    locked: &Locked,
    req: &ImageRequest,
    settings: &Settings,
) -> anyhow::Result<ImageMade> {
    let s = locked.session;
    let next_kernel = NextKernel::of(locked)?;
    let (size, root_used) = image_size(s, req, next_kernel)?;
    let loader = Path::new(SYSTEMD_BOOT);
    if !loader.is_file() {
        return Err(AppError::NoLoader(loader.to_path_buf()).into());
    }
    let out = Output::new(s, &req.output)?;
    let (esp_part, root_part): (Part, Part) = gpt::write_gpt(&out.io, size, req.esp_size)?;
    let file = std::rc::Rc::new(fat_image::open_image(&out.io, true)?);
    fat_image::format(file, esp_part.start, esp_part.len)?;
    let esp = Box::new(ImageEsp::open(&out.io, true)?);
    locked.install_to(esp, settings, Some(loader))?;
    efi_mount_point(s)?;
    let space = {
        use crate::esp::Esp;
        ImageEsp::open(&out.io, false)?.space()?
    };
    image::make_root(&out.tool, root_part, tree(s))?;
    out.finish(&req.output)?;
    let made = ImageMade {
        output: req.output.clone(),
        size,
        root_len: root_part.len,
        root_used,
        esp_free: space.free_clusters * space.cluster_size,
        next_kernel,
    };
    warn_room(s, req, &made);
    Ok(made)
}
