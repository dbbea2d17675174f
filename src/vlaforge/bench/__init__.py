"""`vlaforge bench`: inference cost of a policy — FLOPs, stage breakdown, latency, memory, fast paths.

    flops.py      FLOPs of a call (FlopCounterMode, plus the CPU attention kernel torch does not list)
    roofline.py   the machine's sustained matmul GFLOP/s per dtype; latency as a multiple of FLOPs / peak
    stages.py     Policy.predict split into timed stages; the task-prefix KV cache
    lm_stages.py  the pretrained-LM policies (π0, π0-FAST, OpenVLA, OFT, RT-2) staged by forward hooks
    fastpaths.py  inference_mode (reference), bf16, compile, int8, prefix-cache
    measure.py    interleaved timing, peak memory
    runner.py     one policy through all of the above -> one JSON record
    report.py     console tables, bench-<version>.json, PNG
    commands.py   the `vlaforge bench` sub-command

This package imports no torch at import time (the CLI stays instant); import the modules you need.
"""
