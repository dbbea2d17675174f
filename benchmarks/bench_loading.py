"""Random-access loading throughput of vlaforge.data.Dataset vs a plain per-frame decoder.

    .venv/bin/python benchmarks/bench_loading.py                 # synthetic 128x128, 2 cameras, 24 x ~100 frames
    .venv/bin/python benchmarks/bench_loading.py --data PATH     # an existing dataset
    .venv/bin/python benchmarks/bench_loading.py --gop-sweep     # also: keyframe interval vs size and access time

Every method runs in the same process, over the same shuffled indices, through a torch DataLoader
with the same workers and batch size, and returns the same sample (history frames of every
camera, state, action chunk, pad masks):

  plain       for every frame: open the episode's mp4, seek to the episode start (a keyframe),
              decode forward to the frame, frame.to_ndarray(format="rgb24"), close.
  vlaforge    Dataset: containers kept open per worker, seek to the nearest keyframe, one decode
              pass for the whole history window, reused single-threaded colour converter.
  vlaforge (fast colour)  the same with accurate_color=False (swscale's default rounding).
  vlaforge + frame cache  Dataset.cache_frames(): decoded once into uint8 memmaps.

Writes benchmarks/results/loading.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vlaforge.data import Dataset, write_synthetic_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "loading.json"


class PlainDataset(torch.utils.data.Dataset):
    """The baseline: the same samples as Dataset, each frame decoded from a freshly opened file."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def _frame(self, path: Path, episode_start: int, position: int) -> np.ndarray:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = self.ds.fps
            container.seek(int(episode_start / fps / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if round(frame.time * fps) >= position:
                    return frame.to_ndarray(format="rgb24")
        raise RuntimeError(f"{path}: no frame at position {position}")

    def __getitem__(self, i: int) -> dict:
        ds = self.ds
        ep_i = ds.sampler.episode_of(i)
        ep = ds.meta.episodes[ep_i]
        obs_idx, obs_pad = ds.sampler.window(i, ds._obs_offsets)
        act_idx, act_pad = ds.sampler.window(i, ds._act_offsets)
        item = {}
        for key in ds.camera_keys:
            path = ds.meta.video_file(ep, key)
            start = ds.meta.video_start(ep, key)
            frames = [self._frame(path, start, start + int(g - ep.dataset_from_index)) for g in obs_idx]
            item[key] = torch.from_numpy(np.stack(frames))
            item[f"{key}_is_pad"] = torch.from_numpy(obs_pad)
        item["observation.state"] = torch.from_numpy(ds._columns["observation.state"][obs_idx])
        item["action"] = torch.from_numpy(ds._columns["action"][act_idx])
        item["action_is_pad"] = torch.from_numpy(act_pad)
        item["index"] = torch.tensor(i)
        return item


class _Indices(torch.utils.data.Sampler):
    """A sampler whose index list can be swapped between epochs of a persistent DataLoader."""

    def __init__(self, indices: list[int]):
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def measure(dataset, indices: np.ndarray, workers: int, batch_size: int) -> dict:
    """Samples/s of one full pass over `indices`, with the workers already started (warm-up pass first)."""
    sampler = _Indices(indices[: batch_size * max(workers, 1)].tolist())
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, persistent_workers=workers > 0
    )
    t0 = time.perf_counter()
    for _ in loader:  # starts the workers, opens files
        pass
    startup = time.perf_counter() - t0
    sampler.indices = indices.tolist()
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        n += len(batch["index"])
    elapsed = time.perf_counter() - t0
    del loader
    return {
        "samples": n,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(n / elapsed, 1),
        "ms_per_sample_per_worker": round(1000 * elapsed * max(workers, 1) / n, 3),
        "warmup_s": round(startup, 3),
    }


def gop_sweep(args: argparse.Namespace, work: Path) -> list[dict]:
    """Keyframe interval vs video size and single-process random access (history window)."""
    rows = []
    rng = np.random.default_rng(1)
    for gop in (1, 2, 4, 8, 16, 32):
        root = work / f"gop{gop}"
        if not root.exists():
            write_synthetic_dataset(
                root, episodes=args.gop_episodes, length=args.length, height=args.size, width=args.size,
                fps=args.fps, gop=gop, codec=args.codec, seed=0,
            )  # fmt: skip
        ds = Dataset(root, history=args.history, chunk=args.chunk)
        idx = rng.permutation(len(ds))[: args.gop_samples]
        ds[int(idx[0])]
        t = time.perf_counter()
        for i in idx:
            ds[int(i)]
        ms = 1000 * (time.perf_counter() - t) / len(idx)
        size = sum(p.stat().st_size for p in (root / "videos").rglob("*.mp4"))
        rows.append({"gop": gop, "video_kb_per_frame": round(size / 1024 / len(ds) / len(ds.camera_keys), 3),
                     "ms_per_sample": round(ms, 3)})  # fmt: skip
        print(
            f"  gop {gop:>2}: {rows[-1]['video_kb_per_frame']:.3f} KB/frame/camera, {ms:.2f} ms/sample (1 process)"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", type=Path, default=None, help="existing dataset (default: build a synthetic one)"
    )
    p.add_argument(
        "--work", type=Path, default=None, help="where to build synthetic datasets (default: temp)"
    )
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--fps", type=float, default=80)
    p.add_argument("--codec", default="h264", choices=["h264", "av1"])
    p.add_argument("--history", type=int, default=2)
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--samples", type=int, default=1600, help="shuffled samples per vlaforge run")
    p.add_argument("--baseline-samples", type=int, default=480, help="shuffled samples for the slow baseline")
    p.add_argument("--gop-sweep", action="store_true")
    p.add_argument("--gop-episodes", type=int, default=8)
    p.add_argument("--gop-samples", type=int, default=400)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])

    with tempfile.TemporaryDirectory(prefix="bench_loading_") as tmp:
        work = args.work or Path(tmp)
        root = args.data
        if root is None:
            root = work / "synthetic"
            if not root.exists():
                t = time.perf_counter()
                write_synthetic_dataset(
                    root, episodes=args.episodes, length=args.length, length_jitter=10, height=args.size,
                    width=args.size, fps=args.fps, codec=args.codec, seed=0,
                )  # fmt: skip
                print(f"wrote {root} in {time.perf_counter() - t:.1f} s")
        ds = Dataset(root, history=args.history, chunk=args.chunk)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(ds))
        print(ds)
        results = []

        def run(name: str, dataset, n: int) -> None:
            r = {"method": name, **measure(dataset, order[:n], args.workers, args.batch_size)}
            results.append(r)
            print(
                f"  {name:<26} {r['samples_per_s']:>8.1f} samples/s  ({r['ms_per_sample_per_worker']:.2f} ms/sample/worker)"
            )

        run("plain (open+decode/frame)", PlainDataset(ds), args.baseline_samples)
        run("vlaforge", ds, args.samples)
        fast = Dataset(root, history=args.history, chunk=args.chunk, accurate_color=False)
        run("vlaforge (fast colour)", fast, args.samples)
        cached = Dataset(root, history=args.history, chunk=args.chunk)
        t = time.perf_counter()
        cache_dir = cached.cache_frames(work / "frame_cache")
        cache_s = time.perf_counter() - t
        run("vlaforge + frame cache", cached, min(len(ds), 4 * args.samples))
        results[-1]["cache_build_s"] = round(cache_s, 2)
        cache_mb = sum(f.stat().st_size for f in cache_dir.glob("*.npy")) / 2**20

        base = results[0]["samples_per_s"]
        for r in results:
            r["vs_plain"] = round(r["samples_per_s"] / base, 1)
        sweep = gop_sweep(args, work) if args.gop_sweep else None
        video_mb = sum(f.stat().st_size for f in (Path(root) / "videos").rglob("*.mp4")) / 2**20

    from vlaforge.info import machine_info

    machine = machine_info()
    print()
    print(f"command: {command}")
    print(
        f"dataset: {len(ds)} frames, {ds.num_episodes} episodes, cameras {len(ds.camera_keys)} x "
        f"{ds.features[ds.camera_keys[0]]['shape']}, {ds.version}, history {args.history}, chunk {args.chunk}, "
        f"videos {video_mb:.1f} MB, frame cache {cache_mb:.0f} MB (built in {cache_s:.1f} s)"
    )
    print(
        f"machine: {machine['cpu']} ({machine['cores']} cores), DataLoader workers {args.workers}, batch {args.batch_size}"
    )
    print()
    print(f"| {'method':<26} | {'samples/s':>9} | {'ms/sample/worker':>16} | {'vs plain':>8} |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 18}|{'-' * 10}|")
    for r in results:
        print(
            f"| {r['method']:<26} | {r['samples_per_s']:>9.1f} | {r['ms_per_sample_per_worker']:>16.2f} | "
            f"{r['vs_plain']:>7.1f}x |"
        )
    if sweep:
        print()
        print("| gop | KB/frame/camera | ms/sample (1 process) |")
        print("|-----|-----------------|-----------------------|")
        for row in sweep:
            print(f"| {row['gop']:>3} | {row['video_kb_per_frame']:>15.3f} | {row['ms_per_sample']:>21.2f} |")
    record = {
        "command": command,
        "machine": machine,
        "dataset": {
            "path": str(args.data) if args.data else "synthetic",
            "frames": len(ds),
            "episodes": ds.num_episodes,
            "cameras": ds.camera_keys,
            "image_shape": list(ds.features[ds.camera_keys[0]]["shape"]),
            "version": ds.version,
            "fps": ds.fps,
            "video_mb": round(video_mb, 2),
            "frame_cache_mb": round(cache_mb, 1),
        },
        "history": args.history,
        "chunk": args.chunk,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "results": results,
        "gop_sweep": sweep,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
