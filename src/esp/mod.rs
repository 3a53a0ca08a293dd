//! The EFI System Partition: one interface, two backends (a mounted
//! directory, a FAT volume inside a disk image), and the installer written
//! once against it.
