"""The table and the targets of bench/peers, from its results dictionary.

    python3 bench/report.py bench/results/peers.json              # print peers.md's text
    python3 bench/report.py bench/results/peers.json docs/benchmarks.md   # refresh the copy in docs/benchmarks.md

The copy in docs/benchmarks.md sits between the two BEGIN/END marker comments below.
"""

import json
import sys

# Row order and names of the table.
ROWS = [
    ("floor", "busybox floor (hand-made)"),
    ("genboot", "genboot"),
    ("itools-list", "initramfs-tools MODULES=list"),
    ("itools-most", "initramfs-tools MODULES=most"),
    ("dracut-minimal", "dracut minimal (`--no-hostonly -m … --drivers …`)"),
    ("dracut-default", "dracut (default)"),
]
PEERS = ["itools-list", "itools-most", "dracut-minimal", "dracut-default"]
MIB = 1024 * 1024


def _f(x, unit="", nd=2):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


def booted(res, name):
    b = res["boots"].get(name)
    return bool(b and b["ok"])


def targets(res):
    """Each target: met (True/False/None when it could not be measured),
    the figures and the ratio."""
    b, s, bo = res["builds"], res["initrds"], res["boots"]
    t = []

    def add(name, met, detail):
        t.append({"target": name, "met": met, "detail": detail})

    peers_ok = [p for p in PEERS if booted(res, p) and p in b]
    step = b.get("genboot-initrd-step") or b.get("genboot-build-cold")
    step_name = "initrd step" if "genboot-initrd-step" in b else "whole cold build"
    if step and peers_ok:
        fastest = min(peers_ok, key=lambda p: b[p]["wall_s_median"])
        ratio = b[fastest]["wall_s_median"] / step["wall_s_median"]
        add("genboot's initrd step ≥ 10× faster than the fastest peer that boots", ratio >= 10,
            f"genboot {step_name} {step['wall_s_median']:.3f} s vs {fastest} "
            f"{b[fastest]['wall_s_median']:.3f} s: {ratio:.1f}×")
    else:
        add("genboot's initrd step ≥ 10× faster than the fastest peer that boots", None,
            "not measured")
    w = b.get("genboot-build-warm")
    add("warm `genboot build` < 100 ms", None if not w else w["wall_s_median"] < 0.1,
        "not measured" if not w else f"{w['wall_s_median'] * 1000:.0f} ms")
    sizes_ok = [p for p in PEERS if booted(res, p) and p in s]
    g = s.get("genboot")
    if g and sizes_ok:
        smallest = min(sizes_ok, key=lambda p: s[p]["bytes"])
        ratio = s[smallest]["bytes"] / g["bytes"]
        add("genboot's initrd ≥ 5× smaller than the smallest peer initrd that boots",
            ratio >= 5, f"genboot {g['bytes'] / MIB:.2f} MiB vs {smallest} "
            f"{s[smallest]['bytes'] / MIB:.2f} MiB: {ratio:.1f}×")
    else:
        add("genboot's initrd ≥ 5× smaller than the smallest peer initrd that boots", None,
            "not measured")
    fl = s.get("floor")
    if g and fl:
        add("genboot's initrd no larger than the busybox floor", g["bytes"] <= fl["bytes"],
            f"genboot {g['bytes']:,} B vs floor {fl['bytes']:,} B "
            f"({g['bytes'] / fl['bytes']:.2f}×)")
    else:
        add("genboot's initrd no larger than the busybox floor", None, "not measured")
    gb, fb = bo.get("genboot"), bo.get("floor")
    if gb and fb and gb["ok"] and fb["ok"]:
        add("uptime at the real init no later than the busybox floor",
            gb["real_init_s_median"] <= fb["real_init_s_median"],
            f"genboot {gb['real_init_s_median']:.3f} s vs floor "
            f"{fb['real_init_s_median']:.3f} s "
            f"({gb['real_init_s_median'] - fb['real_init_s_median']:+.3f} s)")
    else:
        add("uptime at the real init no later than the busybox floor", None, "not measured")
    for family, members, factor in [("initramfs-tools", ["itools-list", "itools-most"], 3),
                                    ("dracut", ["dracut-minimal", "dracut-default"], 8)]:
        name = f"initrd phase ≥ {factor}× shorter than {family} (its fastest variant)"
        ok = [m for m in members if booted(res, m)]
        if gb and gb["ok"] and ok:
            fastest = min(ok, key=lambda m: bo[m]["initrd_phase_s_median"])
            ratio = bo[fastest]["initrd_phase_s_median"] / gb["initrd_phase_s_median"]
            add(name, ratio >= factor,
                f"genboot {gb['initrd_phase_s_median']:.3f} s vs {fastest} "
                f"{bo[fastest]['initrd_phase_s_median']:.3f} s: {ratio:.1f}×")
        else:
            add(name, None, "not measured")
    return t


def genboot_steps(res):
    """genboot-init's own per-step timings (CLOCK_BOOTTIME, from
    /run/genboot/timings.json), medians over the runs."""
    runs = [r.get("genboot_timings") for r in res["boots"].get("genboot", {}).get("runs", [])]
    runs = [r for r in runs if r and r.get("steps")]
    if not runs:
        return []
    names = [s["step"] for s in runs[0]["steps"]]
    at, took = {}, {}
    for n in names:
        at[n], took[n] = [], []
    for r in runs:
        prev = None
        for s in r["steps"]:
            if s["step"] in at:
                at[s["step"]].append(s["us"] / 1e6)
                if prev is not None:
                    took[s["step"]].append((s["us"] - prev) / 1e6)
            prev = s["us"]
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    out = ["", "genboot-init's steps in the genboot boots (its own timings, "
           "`/run/genboot/timings.json`, CLOCK_BOOTTIME; medians): each step ends at "
           "*done at*; *took* is the time since the previous step ended.", "",
           "| step | done at | took |", "|---|---:|---:|"]
    for n in names:
        out.append(f"| {n} | {_f(med(at[n]), ' s', 3)} | {_f(med(took[n]), ' s', 3)} |")
    return out


def markdown(res):
    b, s, bo = res["builds"], res["initrds"], res["boots"]
    lines = [
        f"Measured {res['date']} on {res['host']['cpus']} cores ({res['host']['cpu']}), "
        f"load average before the run {' / '.join(res['host']['load_before'])} "
        f"(1/5/15 min), after {' / '.join(res.get('load_after', ['?'] * 3))}; kernel "
        f"{res['kernel']['package']}; medians of {res['runs']} builds and "
        f"{res.get('boot_runs', res['runs'])} boots after a warm-up of each; genboot "
        f"{res.get('genboot_commit', '?')}, "
        + ", ".join(f"{k} {v}" for k, v in res.get("peer_versions", {}).items()) + ".",
        "",
        "| initrd | build | peak RSS | size | modules | /init at | real init at | initrd phase "
        "| QEMU wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in ROWS:
        if key not in s and key not in b:
            continue
        bb = b.get(key)
        if key == "genboot":
            bb = b.get("genboot-initrd-step")
        ss = s.get(key)
        boot = bo.get(key)
        ok = bool(boot and boot["ok"])
        failed = bool(boot) and not ok
        if not ok:
            boot = None
        lines.append("| " + " | ".join([
            label + (" **(did not boot)**" if failed else ""),
            _f(bb and bb["wall_s_median"], " s", 3),
            _f(bb and bb["max_rss_kib_median"] / 1024, " MiB", 1),
            _f(ss and ss["bytes"] / MIB, " MiB", 2),
            str(ss["modules"]) if ss else "–",
            _f(boot and boot["init_s_median"], " s", 3),
            _f(boot and boot["real_init_s_median"], " s", 3),
            _f(boot and boot["initrd_phase_s_median"], " s", 3),
            _f(boot and boot["qemu_wall_s_median"], " s", 2),
        ]) + " |")
    for key, label in [("genboot-build-cold", "whole `genboot build`, cold store"),
                       ("genboot-build-warm", "whole `genboot build`, warm store"),
                       ("depmod", "`depmod` (the peers need it first; not in their build)")]:
        if key in b:
            lines.append(f"| {label} | {_f(b[key]['wall_s_median'], ' s', 3)} | "
                         f"{_f(b[key]['max_rss_kib_median'] / 1024, ' MiB', 1)} "
                         "| | | | | | |")
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    for t in res.get("targets") or targets(res):
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {met} | {t['detail']} |")
    lines += genboot_steps(res)
    ph = b.get("genboot-initrd-step", {}).get("phases_s_median")
    if ph:
        lines += ["", "Where genboot's initrd step spends its time (`bench/initrd-step` times "
                  "its own phases; medians):", "", "| phase | time |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} s |" for k, v in ph.items()]
    prof = res.get("genboot_build_profile")
    if prof:
        lines += ["", "Where a cold `genboot build` spends its time (its own progress lines, "
                  "one run on a pseudo-terminal; seconds since it started):", "", "```"]
        lines += prof + ["```"]
    notes = res.get("notes")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


BEGIN = "<!-- bench/peers results: generated by `python3 bench/report.py` -->"
END = "<!-- end of bench/peers results -->"


def refresh_readme(readme, md):
    text = open(readme).read()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    open(readme, "w").write(text[:start] + "\n" + md + text[end:])


if __name__ == "__main__":
    md = markdown(json.load(open(sys.argv[1])))
    if len(sys.argv) > 2:
        refresh_readme(sys.argv[2], md)
    else:
        print(md, end="")
