"""GPU execution-provider configuration: CUDA and TensorRT options, per device.

The GPU path is ONNX Runtime with different providers, not a separate backend, so this module
only turns the user's choice (``--device cuda|tensorrt``, ``--gpus 0,1``) into the provider list
each session is created with. Why these settings:

- CUDA ``arena_extend_strategy = kSameAsRequested``: the default power-of-two growth keeps
  memory for every shape it ever saw; with lengths bucketed to a few sizes (``batcher``) the
  arena settles after the first batch of each bucket instead of growing without bound.
- ``cudnn_conv_algo_search = HEURISTIC``: transformers have no convolutions worth an
  exhaustive search per new shape (EXHAUSTIVE re-benchmarks on every new bucket).
- ``do_copy_in_default_stream``: input copies ordered with compute, no extra synchronisation.
- TensorRT: fp16, an engine cache directory inside the run's work directory (engines take
  minutes to build; the cache makes the second run start in seconds), and one optimization
  profile spanning min/opt/max shapes taken from the bucket sizes, so TensorRT does not build
  a new engine for every new sequence length.
"""

from __future__ import annotations

from pathlib import Path

from ...options import CPU, CUDA, GPU_PROVIDERS, TENSORRT, GpuOptions, provider_names

__all__ = ["CPU", "CUDA", "GPU_PROVIDERS", "TENSORRT", "GpuOptions", "provider_names"]

# Sequence-length buckets for GPUs: each bucket is one shape per batch size class, so arenas,
# cuDNN/cuBLAS plans and TensorRT profiles are reused instead of rebuilt per length.
DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 384, 512)


def buckets_for(max_length: int, buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """The bucket sizes a model with ``max_length`` uses; the last one is always ``max_length``."""
    kept = tuple(b for b in buckets if b < max_length)
    return kept + (max_length,)


def cuda_options(device_id: int, gpu: GpuOptions) -> dict[str, str]:
    opts = {
        "device_id": str(device_id),
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
    }
    if gpu.mem_limit_bytes:
        opts["gpu_mem_limit"] = str(gpu.mem_limit_bytes)
    return opts


def profile_shapes(input_names: list[str], rows: int, length: int) -> str:
    """TensorRT's shape string, e.g. ``input_ids:1x16,attention_mask:1x16``."""
    return ",".join(f"{name}:{rows}x{length}" for name in input_names)


def tensorrt_options(device_id: int, gpu: GpuOptions, input_names: list[str], max_length: int, max_rows: int, token_budget: int, fp16: bool = False, engine_key: str | None = None) -> dict[str, str]:
    """One explicit profile covering every batch the batcher can make for this model; an fp16
    engine only when the chosen precision is fp16 (``choose``: asked, or auto on a gated model).

    min = 1 row of the smallest bucket; max = ``max_rows`` rows of ``max_length`` (the batcher
    never exceeds either); opt = the shape the token budget gives at the middle bucket, where
    most batches of mixed corpora fall.

    ``engine_key`` (``manifest.compiled_identity``): the engines of that graph get a directory of
    their own. ONNX Runtime names an engine by the model's file name, node names and versions,
    never its weights, and every artifact names its graphs alike: a re-fitted artifact scored to
    the same output (whose ``.trt-cache`` is reused), or two fine-tunes of one base in one
    ensemble, ran another model's engine. The timing cache (layer timings) stays shared.
    """
    buckets = buckets_for(max_length)
    mid = buckets[len(buckets) // 2]
    opt_rows = max(1, min(max_rows, token_budget // mid))
    opts = {
        "device_id": str(device_id),
        "trt_fp16_enable": "1" if fp16 else "0",
        "trt_max_workspace_size": str(gpu.trt_workspace_bytes),
        "trt_profile_min_shapes": profile_shapes(input_names, 1, buckets[0]),
        "trt_profile_opt_shapes": profile_shapes(input_names, opt_rows, mid),
        "trt_profile_max_shapes": profile_shapes(input_names, max_rows, max_length),
    }
    if gpu.trt_cache_dir is not None:
        cache = Path(gpu.trt_cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        engines = cache / f"engines-{engine_key[:32]}" if engine_key else cache
        engines.mkdir(parents=True, exist_ok=True)
        opts.update({
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": "1",
            "trt_timing_cache_path": str(cache),
        })
    return opts


def provider_list(requested: list[str], device_id: int, gpu: GpuOptions, *, input_names: list[str], max_length: int, max_rows: int, token_budget: int, fp16: bool = False, engine_key: str | None = None) -> list:
    """``requested`` (provider names, in order) with per-device options attached.

    TensorRT is always followed by CUDA (for the ops TensorRT does not take) and CPU last, as
    ONNX Runtime recommends; CUDA alone is followed by CPU.
    """
    names = provider_names(requested)
    out: list = []
    if TENSORRT in names:
        out.append((TENSORRT, tensorrt_options(device_id, gpu, input_names, max_length, max_rows, token_budget, fp16, engine_key)))
    if TENSORRT in names or CUDA in names:
        out.append((CUDA, cuda_options(device_id, gpu)))
    out.append(CPU)
    return out


def providers_for_device(device: str) -> list[str]:
    """``--device`` to provider names: cpu | cuda | tensorrt."""
    table = {"cpu": [CPU], "cuda": [CUDA, CPU], "tensorrt": [TENSORRT, CUDA, CPU]}
    if device not in table:
        from ...errors import StackscoreError

        raise StackscoreError(f"--device must be cpu, cuda or tensorrt, not '{device}'")
    return table[device]
