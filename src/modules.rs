//! Kernel module trees: the index read from each module's `.modinfo`, the
//! initrd closure, and the kmod index files for stage 2.
