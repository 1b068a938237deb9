"""Training on several processes (torchrun: FSDP2 on CUDA, DDP on the CPU) and the run's checkpoints:
full model and optimiser states gathered from the shards, trainer state for an exact resume.
Used by `engine.train.loop`; one process is the same code with a world of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from engine.loading import read_state, save_model, weight_files
from engine.model import Model
from engine.train import small
from engine.train.args import TrainArgs

# ---- distributed ------------------------------------------------------------------------------------


def setup_dist(args: TrainArgs):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def wrap(model: Model, args: TrainArgs, world: int, device):
    if world == 1:
        return model, "single"
    mode = args.dist_mode
    if mode == "auto":
        mode = "fsdp" if device.type == "cuda" else "ddp"
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=False), "ddp"
    from torch.distributed.fsdp import fully_shard

    # Per-layer units for blocks only ever entered through their forward (self-attention decoder
    # layers, ViT layers); cross-attention layers are also used outside their forward (frame K/V
    # projection), so they stay in the root unit.
    for layer in list(model.language_model.layers) + list(_vision_layers(model)):
        if type(layer).__name__ != "CrossAttentionLayer":
            fully_shard(layer)
    fully_shard(model)
    return model, "fsdp"


def _vision_layers(model):
    for m in model.modules():
        if type(m).__name__ == "VisionLayer":
            yield m


def full_model_state(model) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optim_state(model, opt) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_optim_state(model, opt, state: dict, world: int) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=world > 1)
    set_optimizer_state_dict(model, opt, state, options=opts)


# ---- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(
    folder: Path, cfg, state, tok, args: TrainArgs, trainer_state: dict | None = None
) -> None:
    """Rank 0 only. `state` is the full (canonical-key) model state on CPU."""
    cpu = Model(cfg)
    cpu.load_state_dict(state)
    save_model(cpu, folder, tok)
    small.write_generation_json(folder, args.system_prompt)
    if trainer_state is not None:
        write_trainer_state(folder, trainer_state)


def write_trainer_state(folder: Path, ts: dict, max_shard_mb: float = 15.0) -> None:
    """Optimizer tensors -> safetensors shards (each <= max_shard_mb), the rest -> trainer_state.json."""
    from safetensors.torch import save_file

    tensors = {"__torch_rng__": ts["torch_rng"]}
    for fqn, st in ts["optimizer"]["state"].items():
        for k, v in st.items():
            tensors[f"{fqn}::{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    for old in folder.glob("optimizer-*.safetensors"):
        old.unlink()
    limit, shards, size = int(max_shard_mb * 2**20), [{}], 0
    for k in sorted(tensors):
        n = tensors[k].numel() * tensors[k].element_size()
        if shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][k] = tensors[k]
        size += n
    for i, sh in enumerate(shards):
        save_file(sh, str(folder / f"optimizer-{i:05d}.safetensors"))
    meta = {k: v for k, v in ts.items() if k not in ("optimizer", "torch_rng")}
    meta["param_groups"] = ts["optimizer"]["param_groups"]
    (folder / "trainer_state.json").write_text(json.dumps(meta, indent=1) + "\n")


def read_trainer_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((folder / "trainer_state.json").read_text())
    tensors = {}
    for f in sorted(folder.glob("optimizer-*.safetensors")):
        tensors.update(load_file(str(f)))
    state: dict = {}
    for key, v in tensors.items():
        if key == "__torch_rng__":
            continue
        fqn, k = key.split("::")
        state.setdefault(fqn, {})[k] = v
    groups = meta.pop("param_groups")
    return {
        **meta,
        "optimizer": {"state": state, "param_groups": groups},
        "torch_rng": tensors["__torch_rng__"],
    }


def _init_weights(folder: Path) -> dict[str, torch.Tensor]:
    return read_state(weight_files(folder))
