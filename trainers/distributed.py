"""One trial over several processes (`data_parallel` ranks, one GPU each on CUDA): the same computation as
on one device, with the networks', the image loaders' and the negative samplers' work split.

Every rank holds the whole trial: the same data order, augmented views, random draws, memory bank,
queue and pseudo-labels, computed the same way (replicated bookkeeping). Three kinds of work split: a
network called on a batch of B images runs this rank's share of it (the rows
`torch.tensor_split(batch, ranks)[rank]`, `Ranks.rows`) and the outputs of all ranks are gathered, so every
rank goes on with the whole batch's outputs; a rank's loader reads and decodes only its share of a batch of
image files (trainers.data.RankShare); and the inter-image branch samples the negatives of its share of the
queries (trainers.inter_image.InterImageBranch.negatives). Each gathers the whole batch's result. Batch
norm in training mode normalises with the statistics of the whole batch of the call, summed over the ranks
(SyncedBatchNorm), so a network computes what it computes on one device: MoCo's Shuffle BN keeps its
`bn_groups` meaning, and NPIDv2 (SyncBN in the OpenSelfSup configuration InterCLR's code builds on) and BYOL
(cross-replica batch norm in its JAX code), with the truncated triplet on BYOL's networks, get whole-batch
statistics as their reference code does.

Gradients: the loss is the same number on every rank, and backward through the gather reaches only
this rank's share of the batch, so the sum of the parameters' gradients over the ranks is the whole
batch's gradient (sum_gradients, one all-reduce per step). After the start and after every epoch the
method's state is broadcast from rank 0, so replicas cannot drift apart across epochs through GPU sums
that are not bit-reproducible (within an epoch they agree bit for bit on a CPU, or with deterministic
kernels). Global k-means runs on rank 0 alone; the others take its labels with that broadcast.
Rank 0 evaluates (all ranks extract features, rank 0 computes the metrics and sends the row), reports
and saves the trial's state; the others load the same state file on a resume.

A trial's ranks are processes on one machine (Ray places a trial's GPUs on one node): rank 0 is the
process that runs the trial, and it starts the others (`lead`), which follow it to the end.
"""

from __future__ import annotations

import datetime
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

LEADER = 0
# Rank 0 alone computes the metrics (the SVMs can take many minutes at ImageNet scale) while the others
# wait for its row in a collective: the group's timeout must outlast that.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class Ranks:
    """This process's place in its trial's process group."""
    rank: int
    world: int

    @property
    def leader(self) -> bool:
        return self.rank == LEADER

    def sizes(self, batch: int) -> list[int]:
        """Rows of a batch per rank, in torch.tensor_split's order (the first `batch % world` get one more)."""
        share, extra = divmod(batch, self.world)
        return [share + (rank < extra) for rank in range(self.world)]

    def rows(self, batch: int) -> slice:
        """This rank's rows of a batch of `batch` rows: its part of torch.tensor_split's split."""
        sizes = self.sizes(batch)
        start = sum(sizes[:self.rank])
        return slice(start, start + sizes[self.rank])

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[self.rows(len(batch))]

    def gather(self, local: torch.Tensor, batch: int) -> torch.Tensor:
        """The whole batch's rows from every rank's share; backward keeps this rank's share's gradient."""
        return _Gather.apply(local, self.sizes(batch), self.rank)

    def sum_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Each parameter's gradient summed over the ranks, in one all-reduce."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for grad, summed in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(summed.view_as(grad))

    def broadcast_state(self, state) -> None:
        """Every tensor in a (nested) state dict overwritten in place with rank 0's."""
        for tensor in tensors_in(state):
            if tensor.is_contiguous() and tensor.dtype != torch.bool:
                dist.broadcast(tensor, LEADER)
            else:  # gloo sends neither bool nor strided tensors
                sent = tensor.contiguous().to(torch.uint8 if tensor.dtype == torch.bool else tensor.dtype)
                dist.broadcast(sent, LEADER)
                tensor.copy_(sent)

    def broadcast_object(self, value):
        """Rank 0's picklable value on every rank (our own processes: nothing from outside is unpickled)."""
        box = [value]
        dist.broadcast_object_list(box, LEADER)
        return box[0]

    def check_same(self, value: int, what: str) -> None:
        """Refuse to go on unless every rank holds the same integer (e.g. the epoch a resume starts from)."""
        bounds = torch.tensor([value, -value])
        dist.all_reduce(bounds, op=dist.ReduceOp.MIN)  # a CPU tensor: the group's gloo half carries it
        low, high = int(bounds[0]), -int(bounds[1])
        if low != high:
            raise RuntimeError(f"the ranks of this trial disagree on {what} ({low} .. {high}); the state "
                               f"folder changed while they started; rerun the trial")


def tensors_in(state):
    if torch.is_tensor(state):
        yield state
    elif isinstance(state, dict):
        for value in state.values():
            yield from tensors_in(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            yield from tensors_in(value)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        width = max(sizes)
        padded = local.contiguous()
        if len(local) < width:  # all_gather sends equal shapes
            padded = torch.cat([padded, padded.new_zeros((width - len(local), *local.shape[1:]))])
        pieces = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(pieces, padded)
        return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; backward sums the gradients over the ranks too (each rank's loss reaches the
    sum only through its own share of the batch)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        total = local.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def shard_map(ranks: Ranks | None, network, batch: torch.Tensor):
    """network(batch) as one device computes it: this rank's share through `network`, every output
    (a tensor or a tuple of them, one row per image) gathered from all ranks."""
    if ranks is None:
        return network(batch)
    out = network(ranks.share(batch))
    if isinstance(out, tuple):
        return tuple(ranks.gather(piece, len(batch)) for piece in out)
    return ranks.gather(out, len(batch))


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are those of the whole batch over all ranks, with the
    same running-statistics update as nn.BatchNorm (unbiased variance; momentum None: a cumulative
    average). Mean and variance in two passes, as PyTorch's kernel, not E[x^2] - E[x]^2; float32 under
    bf16 autocast. In eval mode it is nn.BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch of at least 2 dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()
        local_count = x32.new_full((1,), x32.numel() / max(1, x32.shape[1]))
        totals = _AllReduceSum.apply(torch.cat([x32.sum(dims), local_count]))
        count = totals[-1:].detach()
        mean = totals[:-1] / count
        centred = x32 - mean.view(shape)
        variance = _AllReduceSum.apply((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / self.num_batches_tracked.double()).float() if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(variance.detach() * count / (count - 1).clamp(min=1), factor)
        return out.to(x.dtype)


def sync_batch_norm(network: nn.Module) -> nn.Module:
    """`network` with every batch-norm layer replaced by a SyncedBatchNorm holding its parameters and buffers."""
    for name, child in network.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            synced = SyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats, device=child.running_mean.device)
            synced.load_state_dict(child.state_dict())
            if child.affine:
                synced.weight, synced.bias = child.weight, child.bias
            synced.train(child.training)
            setattr(network, name, synced)
        else:
            sync_batch_norm(child)
    return network


def distribute(networks: list[nn.Module], ranks: Ranks) -> None:
    """Every network of a method split over the ranks: synced batch norm, and each encoder's calls shared out."""
    for network in networks:
        sync_batch_norm(network)
        if hasattr(network, "ranks"):
            network.ranks = ranks


# ---- starting the ranks ------------------------------------------------------------------------------------

HOST = "127.0.0.1"
STOP_WAIT_S = 30  # how long a stopped follower may take before it is killed
FINISH_WAIT_S = 600  # how long followers may take to finish after rank 0 has finished the trial


def rendezvous(world: int, port: int = 0) -> dist.TCPStore:
    """Rank 0's store (on a free port the system picks: no race for it) or a follower's connection to it."""
    return dist.TCPStore(HOST, port, world, is_master=port == 0, timeout=datetime.timedelta(minutes=5),
                         wait_for_workers=False)


def join_group(rank: int, world: int, store: dist.TCPStore, device: str) -> Ranks:
    """Join the trial's process group: gloo on a CPU; on CUDA, NCCL for GPU tensors and gloo for the few
    host-side values (the resume check, the metric row)."""
    backend = "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
    return Ranks(rank, world)


class Followers:
    """Ranks 1 .. world-1 as processes running follower(rank, world, port, *args), started by rank 0.

    Not daemons (a rank's data loader starts worker processes of its own). While the trial runs, a watch
    thread ends rank 0 at once if a follower dies: NCCL would leave rank 0 waiting in its next collective
    until the group's timeout, holding its GPUs. Rank 0's exit is then a crashed trial, which Ray retries
    from the last saved state."""

    def __init__(self, world: int, port: int, follower, args: tuple):
        context = multiprocessing.get_context("spawn")
        self.processes = [context.Process(target=_follow, args=(follower, rank, world, port, args),
                                          name=f"rank {rank}") for rank in range(1, world)]
        for process in self.processes:
            process.start()
        self.finished = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        """The only thread that reaps a follower until the trial is over (two threads reaping one process
        can both miss its exit code)."""
        running = list(self.processes)
        while running and not self.finished.is_set():
            ready = multiprocessing.connection.wait([p.sentinel for p in running], timeout=1.0)
            for process in [p for p in running if p.sentinel in ready]:
                running.remove(process)
                process.join(timeout=STOP_WAIT_S)  # its sentinel can fire before its exit code is readable
                if process.exitcode != 0 and not self.finished.is_set():
                    print(f"{process.name} of this trial died (exit code {process.exitcode}); stopping the trial",
                          flush=True)
                    self.stop()
                    os._exit(1)

    def _end_watch(self) -> None:
        self.finished.set()
        if threading.current_thread() is not self.watcher:
            self.watcher.join()

    def stop(self) -> None:
        """After a failed trial: terminate, then kill what does not stop."""
        self._end_watch()
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()

    def finish(self) -> None:
        """After a finished trial: wait for the followers; raises if one failed or hangs."""
        self._end_watch()
        for process in self.processes:
            process.join(timeout=FINISH_WAIT_S)
        hung = [p.name for p in self.processes if p.is_alive()]
        crashed = [p.name for p in self.processes if not p.is_alive() and p.exitcode != 0]
        if hung:
            self.stop()
        if hung or crashed:
            raise RuntimeError(f"{', '.join(hung + crashed)} of this trial {'hung' if hung else 'failed'} after rank 0 "
                               f"finished; its traceback, if any, is printed above")


def lead(world: int, device: str, follower, args: tuple, work):
    """Rank 0: start ranks 1.. running follower(rank, world, port, *args), join the group, and return
    work(ranks) once every rank has finished; on a failure the followers are stopped first."""
    store = rendezvous(world)
    followers = Followers(world, store.port, follower, args)
    try:
        result = work(join_group(LEADER, world, store, device))
    except BaseException:
        followers.stop()  # before leaving the group: followers waiting on rank 0 are stopped, not failed
        leave_group(abort=True)
        raise
    # Every collective has completed: leave before waiting for the followers, whose own leaving may wait for
    # rank 0's (destroying a communicator was a collective call in some NCCL versions).
    leave_group()
    followers.finish()
    return result


def follow(rank: int, world: int, port: int, device: str, work) -> None:
    """A follower's side of `lead`: join rank 0's group, run work(ranks), leave."""
    ranks = join_group(rank, world, rendezvous(world, port), device)
    try:
        work(ranks)
    finally:
        leave_group()


def _follow(follower, rank: int, world: int, port: int, args: tuple) -> None:
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        follower(rank, world, port, *args)
    except BaseException:
        traceback.print_exc()
        _end_follower(1)
    _end_follower(0)


def _end_follower(code: int) -> None:
    """A follower's only way out, with no interpreter teardown. After a failure, the group's sockets would
    wait for rank 0. After a finished run (follow has left the group; rank 0 needs nothing more), the C++
    teardown after Python's own aborted ("terminate called without an active exception", no Python frame)
    in 2 of 10 and 4 of 10 runs of two ranks here, failing a finished trial; with this exit, 0 of 37. What
    the teardown would still have done is done here: end the follower's child processes (loader workers
    kept between epochs) and flush its output."""
    for child in multiprocessing.active_children():
        child.terminate()
        child.join()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_with_parent(parent: int, every_s: float = 5.0) -> None:
    """A follower whose rank 0 was killed outright (SIGKILL, a node's OOM killer) would wait in a collective
    until the group's timeout (NCCL notices no closed socket): it exits once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(every_s)
    _end_follower(1)


def leave_group(abort: bool = False) -> None:
    """abort: after a failure, when collectives may still wait for stopped ranks: NCCL queues a collective and
    returns, and destroying the group would wait for it (until the group's timeout); aborting does not."""
    if not dist.is_initialized():
        return
    if abort and hasattr(dist.distributed_c10d, "_abort_process_group"):  # not in older torch releases
        dist.distributed_c10d._abort_process_group()
    else:
        dist.destroy_process_group()
