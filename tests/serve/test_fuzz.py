from tests.serve.fuzz_messages import drive
from vlaforge.serve.server import PolicyServer


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_fuzz_500_malformed_messages_error_replies_then_valid_request_works(policy):
    limit = 256 * 1024
    with PolicyServer(policy, "127.0.0.1", 0, max_message_bytes=limit).running_in_thread() as srv:
        drive(srv.port, 50, seed=1, oversize_bytes=limit)  # warm up allocators before measuring
        rss0 = _rss_mb()
        result = drive(srv.port, 500, seed=0, oversize_bytes=limit)
        grown = _rss_mb() - rss0
    assert result["bad"] == [] and result["final_ok"], result
    assert result["outcome"]["error_reply"] > 400 and result["outcome"].get("closed_1009") == 5, result
    assert len(result["labels"]) > 30  # many kinds of bad input, not one repeated
    assert grown < 100, f"memory grew by {grown:.0f} MB over 500 malformed messages"
