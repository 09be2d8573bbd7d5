"""Device memory a trace of tensors cannot see, added on top of its peak.

The trace counts the bytes of every tensor alive at the peak: what
``torch.cuda.max_memory_allocated`` reports on a GPU. A job needs more than that; these
three allowances are judgement figures with their sources, to be calibrated against a
GPU run (``bench/gpu_sdxl.py`` prints peak allocated and peak reserved).
"""

from __future__ import annotations

MIB = 2**20

# cuBLAS gives each (handle, stream) a workspace from the caching allocator: 32 MiB on
# sm90 (H100 / H200), 8 MiB + 128 KiB elsewhere (PyTorch aten/src/ATen/cuda/
# CublasHandlePool.cpp: parseChosenWorkspaceSize), and cuBLASLt one more of the same size
# (getCUDABlasLtWorkspaceSize). cuDNN's convolution workspace is allocated per call
# (aten/src/ATen/native/cudnn/Conv_v8.cpp) and sized by the engine it picks: the 256 MiB
# for it is an allowance, not a measurement.
WORKSPACE_BYTES = 2 * 32 * MIB + 256 * MIB

# The caching allocator rounds blocks up to 512 B and carves large ones out of 2 MiB-rounded
# segments (c10/cuda/CUDACachingAllocator.cpp: kMinBlockSize, kRoundLarge); freed blocks too
# small for a later request stay reserved (fragmentation). Reserved runs above allocated
# by this fraction of the peak: an assumption until bench/gpu_sdxl.py measures it.
ALLOCATOR_FRACTION = 0.10

# The CUDA context, the library handles and the loaded kernels live outside the caching
# allocator (torch.cuda.memory_reserved doesn't count them, nvidia-smi does; PyTorch docs
# notes/cuda.rst, "Memory management"). With lazy module loading (CUDA_MODULE_LOADING=LAZY,
# PyTorch's default on CUDA >= 11.7) it is commonly 0.3-0.6 GiB; we allow 512 MiB.
CUDA_CONTEXT_BYTES = 512 * MIB


def allowances(peak_bytes: int) -> dict[str, int]:
    """The three allowances for a step whose traced peak is ``peak_bytes``."""
    return {
        "workspace": WORKSPACE_BYTES,
        "allocator": round(peak_bytes * ALLOCATOR_FRACTION),
        "cuda_context": CUDA_CONTEXT_BYTES,
    }
