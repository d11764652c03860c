"""FramePipeline: order, newest-frame-wins dropping, bit-exactness with infer(), error isolation, shutdown."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from seg_node.engine import EngineConfig, EngineError, FrameError, FramePipeline, PipelineStats, create_engine

CUDA = torch.cuda.is_available()
BACKENDS = ["torch", "onnxruntime"] + (["cuda", "cuda-graphs"] if CUDA else [])


def config_for(backend: str, cache: str) -> EngineConfig:
    if backend.startswith("cuda"):
        return EngineConfig(backend="torch", device="cuda", precision="fp16", confidence=True,
                            cuda_graphs=backend == "cuda-graphs")
    return EngineConfig(backend=backend, device="cpu", engine_cache_dir=cache, confidence=True)


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request, weights_path, cache_dir):
    with create_engine(weights_path("contextnet"), config_for(request.param, str(cache_dir))) as engine:
        yield engine


def drain(pipeline: FramePipeline, count: int) -> list:
    results = []
    while len(results) < count:
        result = pipeline.get(timeout=30)
        assert result is not None, f"only {len(results)} of {count} results arrived"
        results.append(result)
    return results


def test_results_are_bit_identical_to_synchronous_inference(engine, make_frames):
    frames = make_frames(6, seed=3)
    expected = [engine.infer(frame) for frame in frames]
    with engine.pipeline() as pipeline:
        for index, frame in enumerate(frames):
            pipeline.submit(frame, tag=index)
            while pipeline.stats().submitted - pipeline.stats().processed > 2:
                time.sleep(0.002)  # keep the pipeline busy without flooding it
        stats = pipeline.stats()
        results = drain(pipeline, stats.submitted - stats.dropped)
    assert stats.processed + stats.dropped == 6 and stats.errors == 0 and len(results) >= 3
    tags = [result.tag for result in results]
    assert tags == sorted(tags) and tags[-1] == 5
    for result in results:
        want = expected[result.tag]
        assert result.error is None
        assert np.array_equal(result.labels, want.labels) and np.array_equal(result.confidence, want.confidence)
        assert {"queued", "prepare", "network", "total"} <= set(result.timings)


def test_newest_frame_wins_and_order_is_kept(engine, make_frames):
    frames = make_frames(2, seed=4)
    burst = 40
    with engine.pipeline() as pipeline:
        for index in range(burst):  # far faster than any network
            pipeline.submit(frames[index % 2], tag=index)
        results = []
        while not results or results[-1].tag != burst - 1:
            result = pipeline.get(timeout=30)
            assert result is not None
            results.append(result)
        stats = pipeline.stats()
    tags = [result.tag for result in results]
    assert tags == sorted(tags) and tags[-1] == burst - 1  # in order, and the newest frame was not dropped
    assert stats.dropped > 0 and stats.submitted == burst
    assert stats.processed + stats.dropped == burst and stats.processed == len(results)


def test_streams_keep_their_own_order_and_counts(engine, make_frames):
    frames = make_frames(2, seed=5)
    per_stream = 6
    with engine.pipeline() as pipeline:
        for index in range(per_stream):
            for camera, frame in zip(("left", "right"), frames, strict=True):
                pipeline.submit(frame, tag=(camera, index), stream=camera)
            time.sleep(0.01)
        total = pipeline.stats()
        results = drain(pipeline, total.submitted - total.dropped)
        assert pipeline.get(timeout=0.2) is None and pipeline.stats().waiting == 0
        for camera in ("left", "right"):
            indices = [result.tag[1] for result in results if result.stream == camera]
            assert all(result.tag[0] == result.stream for result in results)
            assert indices == sorted(indices) and indices[-1] == per_stream - 1
            stats = pipeline.stats(camera)
            assert stats.submitted == per_stream and stats.processed + stats.dropped == per_stream


def test_a_bad_frame_is_reported_and_the_pipeline_goes_on(engine, make_frames):
    good = make_frames(1, seed=6)[0]
    bad = [good.astype(np.float32), good[:, :, :2], np.zeros((0, 4, 3), np.uint8)]
    with engine.pipeline() as pipeline:
        submitted = 0
        for frame in [good, *bad, good]:
            pipeline.submit(frame, tag=submitted)
            submitted += 1
            drained = drain(pipeline, 1)[0]  # one at a time: no frame replaces another
            assert drained.tag == submitted - 1
            if 0 < drained.tag < 4:
                assert isinstance(drained.error, FrameError) and drained.labels is None
            else:
                assert drained.error is None and np.array_equal(drained.labels, engine.infer(good).labels)
        assert pipeline.stats() == PipelineStats(submitted=5, processed=2, dropped=0, errors=3)


def test_callback_delivery_and_a_failing_callback_does_not_stop_it(engine, make_frames):
    delivered = []
    done = threading.Event()

    def on_result(result):
        delivered.append(result.tag)
        if result.tag == 0:
            raise ValueError("a bug in the caller's callback")
        done.set()

    frame = make_frames(1, seed=7)[0]
    with engine.pipeline(on_result=on_result) as pipeline:
        pipeline.submit(frame, tag=0)
        while not delivered:
            time.sleep(0.005)
        pipeline.submit(frame, tag=1)
        assert done.wait(30)
        with pytest.raises(EngineError, match="on_result"):
            pipeline.get()
    assert delivered == [0, 1]


def test_close_with_frames_in_flight_joins_every_thread(engine, make_frames):
    frames = make_frames(2, seed=8)
    pipeline = FramePipeline(engine)
    for index in range(10):
        pipeline.submit(frames[index % 2], tag=index, stream=f"camera{index % 3}")
    time.sleep(0.01)  # let a frame reach the network
    pipeline.close(timeout=1.0)
    assert not any(thread.is_alive() for thread in pipeline._threads)
    with pytest.raises(EngineError, match="closed"):
        pipeline.submit(frames[0])
    pipeline.close()  # twice is harmless
    assert engine.infer(frames[0]).labels is not None  # the engine outlives its pipeline


def test_infer_while_a_pipeline_runs_on_the_same_engine(engine, make_frames):
    frames = make_frames(4, seed=9)
    expected = [engine.infer(frame) for frame in frames]
    stop = threading.Event()
    checked, wrong = [], []

    def infer_until_stopped():
        index = 0
        while not stop.is_set():
            result = engine.infer(frames[index % 4])
            want = expected[index % 4]
            if not (np.array_equal(result.labels, want.labels) and np.array_equal(result.confidence, want.confidence)):
                wrong.append(index)
            checked.append(index)
            index += 1

    thread = threading.Thread(target=infer_until_stopped)
    thread.start()
    try:
        with engine.pipeline() as pipeline:
            for index in range(16):
                pipeline.submit(frames[index % 4], tag=index)
                while pipeline.stats().submitted - pipeline.stats().processed > 2:
                    time.sleep(0.002)
            stats = pipeline.stats()
            results = drain(pipeline, stats.submitted - stats.dropped)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and len(checked) >= 2 and not wrong, f"infer() gave other labels for {wrong}"
    assert len(results) >= 4 and results[-1].tag == 15
    for result in results:
        want = expected[result.tag % 4]
        assert result.error is None
        assert np.array_equal(result.labels, want.labels) and np.array_equal(result.confidence, want.confidence)


def test_confidence_is_asked_per_frame(engine, make_frames):
    """Frames that do not want the confidence get None and the same labels, in any mix with frames that do."""
    frames = make_frames(4, seed=12)
    expected = [engine.infer(frame) for frame in frames]
    with engine.pipeline() as pipeline:
        for index, frame in enumerate(frames):
            pipeline.submit(frame, tag=index, stream=f"camera{index}", confidence=index % 2 == 0)
        results = drain(pipeline, len(frames))  # one frame per stream: none dropped
    assert sorted(result.tag for result in results) == list(range(len(frames)))
    for result in results:
        want = expected[result.tag]
        assert result.error is None and np.array_equal(result.labels, want.labels)
        if result.tag % 2 == 0:
            assert np.array_equal(result.confidence, want.confidence)
        else:
            assert result.confidence is None


def test_closing_the_engine_closes_its_pipelines(weights_path, make_frames):
    frame = make_frames(1, seed=10)[0]
    engine = create_engine(weights_path("contextnet"), EngineConfig(backend="torch", device="cpu"))
    pipeline = engine.pipeline()
    for index in range(4):
        pipeline.submit(frame, tag=index)
    engine.close()
    assert not any(thread.is_alive() for thread in pipeline._threads)
    for attempt in (lambda: pipeline.submit(frame), lambda: engine.infer(frame), engine.pipeline):
        with pytest.raises(EngineError, match="closed"):
            attempt()
    engine.close()  # twice is harmless


def test_closing_the_engine_of_a_pipeline_interrupted_while_starting_its_threads(weights_path, monkeypatch):
    """Ctrl-C can land while a pipeline starts its threads (the node configures): the pipeline is registered
    with its engine already, and the engine's close must close it whatever its threads' state (#43)."""
    engine = create_engine(weights_path("contextnet"), EngineConfig(backend="torch", device="cpu"))
    start = threading.Thread.start
    started: list[threading.Thread] = []

    def start_one_then_interrupt(thread: threading.Thread) -> None:
        if started:
            raise KeyboardInterrupt
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_one_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        engine.pipeline()
    monkeypatch.undo()
    engine.close()  # before the fix: RuntimeError("cannot join thread before it is started")
    assert started and not started[0].is_alive()


def test_close_says_whether_a_network_run_is_still_in_progress(weights_path, make_frames, monkeypatch):
    """A node that must stop within 2 s does not wait for a long network run: close tells it, so that it
    leaves the engine to the process's end instead of freeing it under the run (#43)."""
    engine = create_engine(weights_path("contextnet"), EngineConfig(backend="torch", device="cpu"))
    running, finish = threading.Event(), threading.Event()
    execute = engine.execute

    def slow_execute(*args, **kwargs):
        running.set()
        finish.wait(30)
        return execute(*args, **kwargs)

    monkeypatch.setattr(engine, "execute", slow_execute)
    pipeline = engine.pipeline()
    pipeline.submit(make_frames(1, seed=11)[0])
    assert running.wait(30)
    assert pipeline.close(timeout=0.1) is False  # the run goes on
    finish.set()
    deadline = time.monotonic() + 30
    while not pipeline.close() and time.monotonic() < deadline:  # closed already: says whether it has stopped
        time.sleep(0.05)
    assert pipeline.close() is True
    engine.close()
