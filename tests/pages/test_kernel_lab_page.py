"""AppTest for the Kernel lab: an interpreter check result is shown; bad shapes are refused."""
from jobs import kernel_lab


def test_kernel_lab_page_shows_results_and_refuses_huge_cpu_shapes(page):
    bench_id = kernel_lab.submit("swiglu", {"rows": 8, "n": 40}, "float32", "cpu", enqueue=False)
    kernel_lab.execute(bench_id)
    at = page("kernel_lab.py")
    assert not at.exception
    assert bench_id in set(at.dataframe[0].value["id"])
    at.selectbox[2].set_value("cpu").run()
    for box in at.number_input:
        box.set_value(100000)
    at.run()
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception
    assert "too large for Triton's interpreter" in at.error[0].value


def test_kernel_lab_defaults_to_a_device_with_a_worker_and_cancels_a_queued_request(page):
    at = page("kernel_lab.py")
    assert at.selectbox[2].value == "cpu"  # no live GPU worker in the tests: not cuda
    queued = kernel_lab.submit("swiglu", {"rows": 8, "n": 40}, "float32", "cpu", enqueue=False)
    at = page("kernel_lab.py")
    next(b for b in at.button if b.key == "kl_cancel").click().run()
    assert not at.exception
    assert kernel_lab.execute(queued) == "not queued"  # a worker never takes it now
    assert "nothing to cancel" in kernel_lab.cancel(queued)
    assert next(r for r in kernel_lab.recent() if r["id"] == queued)["status"] == "cancelled"
