//! The initrd writer: reproducible newc cpio, compressed.
