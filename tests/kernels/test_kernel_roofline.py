"""kernels.roofline: ceilings measurable on CPU; classification by arithmetic intensity."""
import pytest

from kernels import roofline

CEILINGS = {"copy_gb_per_s": 1000.0, "matmul_tflop_per_s": {"bf16": 500.0, "fp32": 50.0}}  # ridges 500 and 50 FLOP/B


def test_measure_ceilings_on_cpu():
    c = roofline.measure_ceilings("cpu")
    assert c["copy_gb_per_s"] > 0.1  # observed ~6-8 GB/s on the shared 2-core EPYC
    assert c["matmul_tflop_per_s"]["fp32"] > 0 and c["matmul_tflop_per_s"]["bf16"] > 0
    assert c["timing"] == "cpu_wall_median"


@pytest.mark.parametrize(
    "row,bound,pct",
    [
        # rmsnorm-like: 1 FLOP/B, 800 GB/s of 1000 → memory-bound at 80 %
        ({"dtype": "bfloat16", "flops": 100, "bytes": 100, "gb_per_s": 800.0, "tflop_per_s": 0.8}, "memory", 80.0),
        # big bf16 matmul: 2000 FLOP/B > 500, 400 of 500 TFLOP/s → compute-bound at 80 %
        ({"dtype": "bfloat16", "flops": 2000, "bytes": 1, "gb_per_s": 0.2, "tflop_per_s": 400.0}, "compute", 80.0),
        # 100 FLOP/B is compute-bound in fp32 (ridge 50) but would be memory-bound in bf16 (ridge 500)
        ({"dtype": "float32", "flops": 100, "bytes": 1, "gb_per_s": 250.0, "tflop_per_s": 25.0}, "compute", 50.0),
        ({"dtype": "float16", "flops": 100, "bytes": 1, "gb_per_s": 250.0, "tflop_per_s": 25.0}, "memory", 25.0),
    ],
)
def test_percent_of_roofline_picks_the_binding_ceiling(row, bound, pct):
    got = roofline.percent_of_roofline(row, CEILINGS)
    assert got["bound"] == bound
    assert got["pct_of_roofline"] == pytest.approx(pct)
    assert got["intensity_flop_per_byte"] == pytest.approx(row["flops"] / row["bytes"])
