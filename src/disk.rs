//! Disk images: GPT with fixed GUIDs, an ESP and a root partition.
