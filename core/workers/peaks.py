"""Dense FP16 tensor-core peaks with FP32 accumulation, per GPU model: the time model's ceiling.

Why this figure: the trainer's matmuls and convolutions run under autocast in fp16 or bf16,
and cuBLAS/cuDNN accumulate those in fp32 (PyTorch's half GEMMs use CUBLAS_COMPUTE_32F,
aten/src/ATen/cuda/CUDABlas.cpp); bf16 always accumulates in fp32. Sparse figures (the
"with sparsity" numbers datasheets print first) never apply: nothing here is 2:4 sparse.

GeForce cards accumulate in fp32 at half their headline fp16 tensor rate (each whitepaper's
"Peak FP16 Tensor TFLOPS with FP32 Accumulate" row is half the "with FP16 Accumulate" row),
while the data-center and professional cards of the same chips run it at full rate (their
BF16 figure, always fp32-accumulated, equals the FP16 one). So the 4090's 165.2, not 330.3.

Each row keeps the parts the figure is made of, SMs x boost clock x dense FLOPs per SM per
clock, beside the figure the vendor prints; tests/core/test_time_model.py checks they agree.
Sources, by NVIDIA document:
- AMPERE_GA102: "NVIDIA Ampere GA102 GPU Architecture" whitepaper v2.0, Table 2/3 and
  Appendix A (GeForce RTX 3090/3080/3070) and Appendix C (RTX A6000); A10 and A40 datasheets.
- A100: "NVIDIA A100 Tensor Core GPU Architecture" whitepaper, Table 1 (312 TFLOPS).
- ADA: "NVIDIA Ada GPU Architecture" whitepaper v2.01, Appendix A (GeForce RTX 4090/4080,
  RTX 6000 Ada, L40, L4); the RTX 40 SUPER cards from NVIDIA's product pages (SMs, boost
  clock, "AI TOPS" = FP8 sparse at 8x the FP16-with-FP32-accumulate rate).
- HOPPER: "NVIDIA H100 Tensor Core GPU" datasheet (SXM 989 / PCIe 756 dense TFLOPS) and
  "NVIDIA H100 Tensor Core GPU Architecture" whitepaper, Table 3; H200 datasheet (as H100 SXM).
- TURING: "NVIDIA Tesla T4" datasheet ("Mixed Precision (FP16/FP32) 65 TFLOPS").
- VOLTA: "NVIDIA Tesla V100" datasheet (Tensor Performance 125 SXM2 / 112 PCIe TFLOPS).
- BLACKWELL_GEFORCE: "NVIDIA RTX Blackwell GPU Architecture" whitepaper, Appendix
  (GeForce RTX 5090 / 5080).
Rows marked "derived" print no fp32-accumulate figure in their source; theirs is computed from
the same parts at the rate their family's whitepaper gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TERA = 1e12


@dataclass(frozen=True)
class GpuPeak:
    pattern: str  # a regular expression matched against NVML's device name, case-insensitive
    sms: int
    boost_mhz: int
    flops_per_sm_clock: int  # dense fp16 in, fp32 accumulate, per SM per clock
    stated_tflops: float  # the figure the source prints (or, "derived", the computed one)
    source: str

    @property
    def flops(self) -> float:
        return self.stated_tflops * TERA

    @property
    def computed_tflops(self) -> float:
        return self.sms * self.boost_mhz * 1e6 * self.flops_per_sm_clock / TERA


# Dense FLOPs per SM per clock, fp16 inputs with fp32 accumulation.
VOLTA_TURING = 1024  # 8 tensor cores x 64 FMA x 2
AMPERE_GA100 = 2048  # 4 tensor cores x 256 FMA x 2
AMPERE_PRO = 1024  # GA10x: 4 tensor cores x 128 FMA x 2, full rate with fp32 accumulate
AMPERE_GEFORCE = 512  # ... half rate with fp32 accumulate on GeForce
ADA_PRO = 1024
ADA_GEFORCE = 512
HOPPER = 4096  # 4 tensor cores x 512 FMA x 2
BLACKWELL_GEFORCE = 512

# Most specific first: "RTX 4070 Ti SUPER" must match before "RTX 4070 Ti" and "RTX 4070".
GPU_PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak(r"H200", 132, 1830, HOPPER, 989.4, "HOPPER (H200 datasheet)"),
    GpuPeak(r"H100.*(SXM|HBM3)", 132, 1830, HOPPER, 989.4, "HOPPER"),
    GpuPeak(r"H100.*PCIe", 114, 1620, HOPPER, 756.4, "HOPPER"),
    GpuPeak(r"A100", 108, 1410, AMPERE_GA100, 312.0, "A100"),
    GpuPeak(r"\bA10\b", 72, 1695, AMPERE_PRO, 125.0, "AMPERE_GA102 (A10 datasheet)"),
    GpuPeak(r"\bA40\b", 84, 1740, AMPERE_PRO, 149.7, "AMPERE_GA102 (A40 datasheet)"),
    GpuPeak(r"RTX A6000", 84, 1800, AMPERE_PRO, 154.8, "AMPERE_GA102 (Appendix C)"),
    GpuPeak(r"L40S", 142, 2490, ADA_PRO, 362.05, "ADA (L40S datasheet)"),
    GpuPeak(r"\bL40\b", 142, 2490, ADA_GEFORCE, 181.05, "ADA (L40: half rate)"),
    GpuPeak(r"\bL4\b", 58, 2040, ADA_PRO, 121.0, "ADA (L4 datasheet: 242 sparse)"),
    GpuPeak(r"RTX 6000 Ada", 142, 2505, ADA_PRO, 364.2, "ADA (derived)"),
    GpuPeak(r"RTX 5090", 170, 2407, BLACKWELL_GEFORCE, 209.5, "BLACKWELL_GEFORCE"),
    GpuPeak(r"RTX 5080", 84, 2617, BLACKWELL_GEFORCE, 112.6, "BLACKWELL_GEFORCE"),
    GpuPeak(r"RTX 4090", 128, 2520, ADA_GEFORCE, 165.2, "ADA (Appendix A)"),
    GpuPeak(r"RTX 4080 SUPER", 80, 2550, ADA_GEFORCE, 104.4, "ADA (derived)"),
    GpuPeak(r"RTX 4080", 76, 2505, ADA_GEFORCE, 97.5, "ADA (Appendix A)"),
    GpuPeak(r"RTX 4070 Ti SUPER", 66, 2610, ADA_GEFORCE, 88.2, "ADA (derived)"),
    GpuPeak(r"RTX 4070 Ti", 60, 2610, ADA_GEFORCE, 80.2, "ADA (derived)"),
    GpuPeak(r"RTX 4070 SUPER", 56, 2475, ADA_GEFORCE, 71.0, "ADA (derived)"),
    GpuPeak(r"RTX 4070", 46, 2475, ADA_GEFORCE, 58.3, "ADA (derived)"),
    GpuPeak(r"RTX 4060 Ti", 34, 2535, ADA_GEFORCE, 44.1, "ADA (derived)"),
    GpuPeak(r"RTX 3090 Ti", 84, 1860, AMPERE_GEFORCE, 80.0, "AMPERE_GA102 (derived)"),
    GpuPeak(r"RTX 3090", 82, 1695, AMPERE_GEFORCE, 71.2, "AMPERE_GA102 (Appendix A)"),
    GpuPeak(r"RTX 3080 Ti", 80, 1665, AMPERE_GEFORCE, 68.2, "AMPERE_GA102 (derived)"),
    GpuPeak(r"RTX 3080", 68, 1710, AMPERE_GEFORCE, 59.5, "AMPERE_GA102 (Table 2)"),
    GpuPeak(r"RTX 3060", 28, 1777, AMPERE_GEFORCE, 25.5, "AMPERE_GA102 (derived)"),
    GpuPeak(r"\bT4\b", 40, 1590, VOLTA_TURING, 65.0, "TURING"),
    GpuPeak(r"V100.*SXM", 80, 1530, VOLTA_TURING, 125.0, "VOLTA"),
    GpuPeak(r"V100", 80, 1380, VOLTA_TURING, 112.0, "VOLTA (PCIe)"),
)

_COMPILED = tuple((re.compile(p.pattern, re.IGNORECASE), p) for p in GPU_PEAKS)


def table_peak(device_name: str) -> GpuPeak | None:
    """The row for NVML's device name ("NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"),
    or None for a device the table doesn't know (the worker then measures it)."""
    for pattern, peak in _COMPILED:
        if pattern.search(device_name):
            return peak
    return None
