"""What loading returns: a `Checkpoint`, the network with everything that came with it.

The model object is the network only (engine.model.Model); the tokenizer, the generation settings, the
authors' decoding defaults and where the weights came from live here, read once by engine.loading and
passed on whole to the session, the evaluation and the benchmarks. Nothing is attached to the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from engine.model import Model
from engine.novelty import WorldCheck


@dataclass(frozen=True)
class Origin:
    """Where a checkpoint came from: what the user named (a folder or a hub id), the folder its files
    were read from, and for the hub, the repository and the revision (commit) of the snapshot."""

    source: str
    folder: Path | None = None
    hub_id: str | None = None
    revision: str | None = None

    @staticmethod
    def of(source: str, folder: Path | None) -> Origin:
        """The origin of `folder`, read from the hub cache's layout when it is a snapshot there
        (.../models--ORG--NAME/snapshots/COMMIT)."""
        hub_id = revision = None
        if (
            folder is not None
            and folder.parent.name == "snapshots"
            and folder.parent.parent.name.startswith("models--")
        ):
            hub_id = folder.parent.parent.name[len("models--") :].replace("--", "/", 1)
            revision = folder.name
        return Origin(str(source), folder, hub_id, revision)

    def describe(self) -> str:
        if self.hub_id:
            return f"{self.hub_id}@{self.revision[:12]}" if self.revision else self.hub_id
        return self.source


@dataclass(frozen=True)
class Checkpoint:
    model: Model
    tokenizer: object | None  # engine.tokenizer.Tokenizer; None when the folder has no tokenizer.json
    origin: Origin
    generation: dict = field(default_factory=dict)  # generation.json: settings our models were trained with
    generation_config: dict | None = None  # generation_config.json: the decoding its authors use
    quantized: str | None = None  # "int8", "fp8-vision", "int8+fp8-vision" or None
    ignored_keys: tuple[str, ...] = ()  # weights in the files that the network does not use
    trained: bool = True  # False only for the untrained stand-in when no model is bundled
    # how far a frame may lie from the training world (engine.novelty), for models that know one world
    world_check: WorldCheck | None = None

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def mode(self) -> str:
        return self.model.cfg.video.mode

    @property
    def source(self) -> str:
        return self.origin.source

    @property
    def out_of_world_answer(self) -> str | None:
        """What the checkpoint says when asked about video unlike its world (generation.json), used
        only with a world check."""
        return (self.generation.get("out_of_world_answer") or None) if self.world_check is not None else None

    @property
    def trained_context(self) -> int | None:
        """The text positions the checkpoint was trained on (generation.json `trained_context`): a
        stream is compacted to stay inside them, as positions beyond them were never learnt. None:
        whatever the session's max_context allows."""
        n = self.generation.get("trained_context")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) and n >= 256 else None

    @property
    def system_prompt(self) -> str | None:
        """The system prompt the checkpoint was trained with (generation.json), or None."""
        return self.generation.get("system_prompt") or None

    def replace(self, **changes) -> Checkpoint:
        return dataclasses.replace(self, **changes)


def in_memory(model: Model, tokenizer, source: str = "in memory", **kw) -> Checkpoint:
    """A Checkpoint of a network built in this process (tests, benchmarks, training)."""
    return Checkpoint(model, tokenizer, Origin(source), **kw)
