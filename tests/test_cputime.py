"""CPU time counts the processes a command started (the black box's worker), running or exited."""

import multiprocessing as mp
import time

from avid.cputime import cpu_seconds, descendants_cpu_seconds


def _burn_then_wait(seconds: float, done) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    done.set()
    time.sleep(30)  # stays alive until terminated


def test_a_live_worker_and_an_exited_one_are_both_counted():
    ctx = mp.get_context("forkserver")  # as the black box's worker: a grandchild, forked by the forkserver
    done = ctx.Event()
    before, own = cpu_seconds(), time.process_time()
    worker = ctx.Process(target=_burn_then_wait, args=(0.6, done), daemon=True)
    worker.start()
    assert done.wait(60)
    assert descendants_cpu_seconds() >= 0.5  # the live worker's time
    assert cpu_seconds() - before >= 0.5 + (time.process_time() - own)
    worker.terminate()
    worker.join()
    time.sleep(0.2)  # the forkserver reaps it
    assert cpu_seconds() - before >= 0.5  # exited: counted through the forkserver that reaped it
