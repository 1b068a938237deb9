"""Generation: prefill, decode-one-token, sampling and the real-time stream protocol.

`StreamDecoder` is the single-threaded heart of the generation channel. It owns the text stream,
the self-attention cache and the commit side of the visual memory, and speaks the protocol
(ARCHITECTURE 1.4): one `<|image|>` per frame, `<|silence|>` or speech after each frame, barge-in
closes the assistant turn with `<|eot_id|>` even mid-word. The runtime's generation thread drives it;
the evaluation harness drives it with a simulated clock. It knows nothing of threads, sources or Qt.

Text context bound: when the stream would pass `max_context` tokens it is compacted: the stream
prefix (system prompt, empty user turn, assistant header) is kept, then the current question turn,
then the most recent tokens from a frame boundary; the kept frames are re-positioned exactly
(their raw keys are re-rotated at their new `<|image|>` positions) and the rest re-prefilled.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine import cpustep
from engine import events as E
from engine import protocol as P
from engine.decoding import Sampling, next_token
from engine.fast import GraphDecoder
from engine.memory import KVCache, VisualMemory


@dataclass(frozen=True)
class StreamConfig:
    system_prompt: str = P.REALTIME_SYSTEM_PROMPT
    memory_frames: int = 64  # visual memory capacity in frames
    keep_first: int = 0  # frames kept at the start of the memory when it slides
    max_context: int = 4096  # text tokens; the published model saw streams of at most 4096
    max_segment_tokens: int = 96  # force a silence after this many speech tokens in one segment
    sampling: Sampling = Sampling()
    # decode-one-token through the fixed-shape step (CUDA graph on GPU); None = on CUDA only
    static_decode: bool | None = None
    compile_decode: bool = False  # torch.compile the fixed-shape step before capturing it (GPU)
    # short chunks (decode steps) of a float32 model on a CPU through engine.cpustep (few operator
    # calls, weight copies in int8 or float16); None = on for such a model, False = never
    cpu_step: bool | None = None
    # the CPU step's weights, "int8" or "float16"; None = cpustep.default_weights() (int8 where
    # bfloat16 is native)
    cpu_weights: str | None = None
    # what the model says when asked about video unlike its training world (engine.novelty), for
    # checkpoints with a world check; None = no such guard (frames' familiarity is ignored)
    out_of_world_answer: str | None = None
    outside_after: int = 2  # consecutive frames that change the judgement (either way)


class StreamDecoder:
    def __init__(
        self,
        model,
        tokenizer,
        config: StreamConfig = StreamConfig(),
        clock: Callable[[], float] | None = None,
    ):
        self.model, self.tok, self.cfg = model, tokenizer, config
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.clock = clock or _Clock()

        if tokenizer.image_id != model.cfg.video.image_token_id:
            raise ValueError(
                f"tokenizer's <|image|> id {tokenizer.image_id} differs from the model's {model.cfg.video.image_token_id}"
            )
        self.cache = KVCache(model.cfg, config.max_context + 64, self.dtype, self.device)
        static = config.static_decode if config.static_decode is not None else self.device.type == "cuda"
        self.cpu_step = None
        store = None
        if config.cpu_step is not False and not static and cpustep.usable(model):
            self.cpu_step = cpustep.CpuDecodeStep(model, self.cache.max_len, config.cpu_weights)
            store = cpustep.memory_dtype()
        self.memory = VisualMemory(
            model.cfg,
            config.memory_frames,
            self.dtype,
            self.device,
            keep_first=config.keep_first,
            store_dtype=store,
        )
        self.ban = self._banned_tokens()
        self.graph = (
            GraphDecoder(model, self.cache, self.memory, compile=config.compile_decode) if static else None
        )
        self.gen = torch.Generator(device="cpu").manual_seed(config.sampling.seed)
        self.prefix_ids = tokenizer.encode_parts(P.stream_prefix_parts(config.system_prompt))
        if len(self.prefix_ids) > config.max_context // 2:
            raise ValueError("the system prompt takes more than half of the context; shorten it")
        self.reset()

    # ---- state -----------------------------------------------------------------------------------
    def reset(self) -> None:
        self.cache.reset()
        self.memory.reset()
        self.ids: list[int] = []  # every token in the cache, in order
        self.frame_at: dict[int, int] = {}  # text position -> internal memory frame number
        self.pending: list[int] = []  # appended to the stream, not yet run through the model
        self.pending_frames: list[tuple[int, object, object]] = []  # (index in pending, k, v)
        self.logits: torch.Tensor | None = None
        self.waiting = False  # the model chose silence; nothing to decode until a frame or question
        self.turn = 0
        self.question_span: tuple[int, int] | None = None  # [start, end) of the current question turn
        self.segment_id = -1
        self.seg_tokens: list[int] = []  # tokens of the speech segment in progress
        self.seg_text = ""
        self._text = None  # incremental decoder of the segment in progress
        self.turn_segments: list[tuple[int, str]] = []  # (segment id, text) spoken under this turn
        self.frames_seen = 0
        self.outside = False  # the recent frames are unlike the model's world (engine.novelty)
        self._judged = (None, 0)  # (the latest familiarity, how many frames in a row)
        self.tokens_decoded = 0
        self.compactions = 0
        self.pending += self.prefix_ids

    @property
    def speaking(self) -> bool:
        return bool(self.seg_tokens)

    @property
    def length(self) -> int:
        return len(self.ids) + len(self.pending)

    # ---- inputs ----------------------------------------------------------------------------------
    def add_frame(
        self, k: torch.Tensor, v: torch.Tensor, source_t: float = 0.0, familiar: bool | None = None
    ) -> list[E.Event]:
        """A perceived frame (raw K/V (Lx, N, KV, D)) enters the stream as one <|image|> token.
        familiar: whether it looks like the model's training world (engine.novelty; None = unknown)."""
        out: list[E.Event] = []
        if self.waiting:
            self.pending.append(self.tok.silence_id)  # the silence the model chose precedes the frame
            self.waiting = False
        self.pending_frames.append((len(self.pending), k, v))
        self.pending.append(self.tok.image_id)
        idx = self.frames_seen
        self.frames_seen += 1
        out.append(E.FrameSeen(self.clock(), idx, source_t, text_pos=self.length - 1))
        if familiar is not None and self.cfg.out_of_world_answer:
            out += self._judge(familiar, idx)
        return out

    def _judge(self, familiar: bool, frame: int) -> list[E.Event]:
        """`outside_after` frames in a row unlike (or like) the model's world change the judgement; the
        first frame of a stream sets it."""
        last, n = self._judged
        self._judged = (familiar, n + 1 if familiar == last else 1)
        first = last is None  # the stream's first frame: nothing to weigh it against
        if self.outside != familiar or (self._judged[1] < self.cfg.outside_after and not first):
            return []
        self.outside = not familiar
        if self.outside:
            msg = (
                "The video looks unlike anything this model was trained on; it stays quiet, and a question "
                "gets a plain answer that it cannot tell."
            )
        else:
            msg = "The video looks like the model's training world again; it comments as usual."
        return [E.Unfamiliar(self.clock(), frame, self.outside, msg)]

    def ask(self, question: str) -> list[E.Event]:
        """Barge-in: close the assistant turn (even mid-word), add the user turn, open a new one."""
        t = self.clock()
        out: list[E.Event] = []
        if self.speaking:
            out.append(self._end_segment(t, interrupted=True))
        if self.waiting:
            self.pending.append(self.tok.silence_id)
            self.waiting = False
        out.append(E.TurnEnd(t, self.turn, interrupted=bool(out)))
        # A question must leave room for the prefix, recent frames and the answer: compaction keeps
        # the whole question, so an unbounded one would overflow the cache (fixed size max_context+64).
        head, body, tail = P.question_parts(question)
        words = self.tok.encode(body[0])[: self.cfg.max_context // 4]
        q = self.tok.encode_markup(head[0]) + words + self.tok.encode_markup(tail[0])
        start = self.length + 1  # after the closing <|eot_id|> of the assistant turn
        self.pending += q
        self.question_span = (start, self.length)
        self.turn += 1
        self.turn_segments = []
        out.append(E.TurnStart(t, self.turn, question))
        return out

    def hush(self) -> list[E.Event]:
        """Stop the answer in progress (the user pressed Esc); the model goes back to watching."""
        if not self.speaking:
            return []
        t = self.clock()
        ev = self._end_segment(t, interrupted=True)
        self.waiting = True
        self.logits = None
        return [ev, E.Silence(t, self.turn, self.frames_seen - 1)]

    def end_speech(self) -> list[E.Event]:
        """The stream ends mid-answer: close the segment in progress (interrupted)."""
        return [self._end_segment(self.clock(), interrupted=True)] if self.speaking else []

    def flush(self) -> None:
        """Run what is pending through the model now (commits staged frames)."""
        self._flush()

    def append(self, tokens: list[int]) -> None:
        """Tokens enter the stream as they are (run by the next flush or step): a benchmark forcing
        the model's choices, or a replay of a recorded stream."""
        self.pending += tokens

    def load_prompt(self, ids: list[int], frames: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        """Start over from a prepared prompt: `ids` whole, with `frames` (index of its <|image|> in
        ids, raw k, raw v) (the offline format: every frame before the question)."""
        self.reset()
        self.pending = list(ids)
        self.pending_frames = list(frames)
        self.frames_seen = len(frames)

    # ---- decoding --------------------------------------------------------------------------------
    def step(self) -> list[E.Event]:
        """Decode one token if the model has something to decide; [] when it is waiting."""
        if self.waiting:
            if self.pending:  # e.g. the stream prefix: prefill it while idle
                self._flush()
            return []
        self._flush()
        if self.outside and not self.speaking:
            if self.turn > 0 and not self.turn_segments:  # asked about video unlike the model's world
                return self._say(self.cfg.out_of_world_answer)
            tok = self.tok.silence_id  # unasked: nothing the model says here would be true
        else:
            tok = self._sample()
        t = self.clock()
        out: list[E.Event] = []
        self.tokens_decoded += 1
        if tok == self.tok.silence_id or len(self.seg_tokens) >= self.cfg.max_segment_tokens:
            if self.speaking:
                out.append(self._end_segment(t, interrupted=False))
            out.append(E.Silence(t, self.turn, self.frames_seen - 1))
            self.waiting = True  # the <|silence|> token is appended lazily, before the next frame/question
            self.logits = None
            return out
        if not self.speaking:
            self.segment_id += 1
            # a revision re-answers a question; speech in the opening turn (nothing was asked) is
            # commentary, never a revision of "an earlier answer"
            prev = self.turn_segments[-1] if self.turn_segments and self.turn > 0 else None
            out.append(E.SpeechStart(t, self.turn, self.segment_id, revises=prev[0] if prev else None))
            if prev is not None:
                out.append(E.Revision(t, self.turn, self.segment_id, prev[0], prev[1]))
        if not self.seg_tokens:
            self._text = self.tok.stream() if hasattr(self.tok, "stream") else None
        self.seg_tokens.append(tok)
        if self._text is not None:  # incremental: O(1) per token however long the answer runs
            piece = self._text.push(tok)  # "" while a multi-byte character is incomplete
        else:
            text = self.tok.decode(self.seg_tokens)
            piece = "" if text.endswith("\ufffd") else text[len(self.seg_text) :]
        self.seg_text += piece
        out.append(E.Token(t, self.turn, self.segment_id, piece))
        self.pending.append(tok)
        return out

    def _say(self, text: str) -> list[E.Event]:
        """A whole answer segment of fixed text (the checkpoint's own sentence), then silence; its
        tokens enter the stream as if the model had said them."""
        t = self.clock()
        self.segment_id += 1
        self.turn_segments.append((self.segment_id, text))
        self.pending += self.tok.encode(text)
        self.tokens_decoded += 1
        self.waiting, self.logits = True, None
        return [
            E.SpeechStart(t, self.turn, self.segment_id),
            E.Token(t, self.turn, self.segment_id, text),
            E.SpeechEnd(t, self.turn, self.segment_id, text),
            E.Silence(t, self.turn, self.frames_seen - 1),
        ]

    def _end_segment(self, t: float, interrupted: bool) -> E.Event:
        text = self.tok.decode(self.seg_tokens)
        self.turn_segments.append((self.segment_id, text))
        self.seg_tokens, self.seg_text = [], ""
        return E.SpeechEnd(t, self.turn, self.segment_id, text, interrupted=interrupted)

    def _sample(self) -> int:
        return next_token(self.logits.float() + self.ban, self.cfg.sampling, self.seg_tokens, self.gen)

    def _banned_tokens(self) -> torch.Tensor:
        V = self.model.cfg.text.vocab_size
        ban = torch.zeros(V, device=self.device)
        names = [
            P.BOS,
            P.EOT,
            P.START_HEADER,
            P.END_HEADER,
            P.VIDEO,
            P.IMAGE,
            P.PAD,
            P.ELLIPSIS,
            "<|end_of_text|>",
        ]
        for n in names:
            try:
                i = self.tok.id(n)
            except (KeyError, ValueError):
                continue
            if i is not None and 0 <= i < V:
                ban[i] = float("-inf")
        return ban

    # ---- the model -------------------------------------------------------------------------------
    @torch.inference_mode()
    def _flush(self) -> None:
        """Run pending tokens through the model (prefill of a chunk, or decode of one token)."""
        if not self.pending:
            return
        compacted = self.length > self.cfg.max_context
        if compacted:
            self._compact()
        self.commit_frames()
        start, chunk = len(self.ids), self.pending
        self.pending = []
        self.logits = self._forward(chunk, start)
        self.ids += chunk
        if compacted:
            _trim_heap()

    @torch.inference_mode()
    def commit_frames(self) -> None:
        """Commit the frames waiting in the stream to the visual memory at their text positions (the
        first half of `flush`; the text is run by the flush that follows)."""
        start = len(self.ids)
        frames, self.pending_frames = self.pending_frames, []
        run: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # consecutive tensor frames: one batch
        for i, k, v in frames:
            pos = start + i
            self.frame_at[pos] = self.memory.committed + len(run)
            if isinstance(k, int):  # a staging slot index (runtime path)
                self._commit_run(run)
                self.memory.commit_staged(self.model, k, pos)
            else:
                run.append((pos, k, v))
        self._commit_run(run)

    def _commit_run(self, run: list) -> None:
        if run:
            self.memory.commit_many(
                self.model, [k for _, k, _ in run], [v for _, _, v in run], [p for p, _, _ in run]
            )
            run.clear()

    def _forward(self, chunk: list[int], start: int) -> torch.Tensor:
        m, dev = self.model, self.device
        T = len(chunk)
        if T == 1 and self.graph is not None:
            self.cache.length = start + 1
            return self.graph(chunk[0], start)
        vis = self.memory.visible
        xkv = self.memory.views() if vis else None
        xmask = row = None  # None: every row sees every committed frame
        if vis and T > 1:  # (one token at the end of the stream sees every committed frame)
            slot_pos = self.memory.slot_pos[:vis].to(dev)  # (vis,)
            see = slot_pos[None, :] <= torch.arange(start, start + T, device=dev)[:, None]  # (T, vis)
            has = see.any(1)
            if not bool(see.all()):
                row = has.to(self.dtype)[:, None]  # (T, 1)
                see = see | ~has[:, None]  # rows that see nothing: any keys (output dropped by row)
                xmask = see.repeat_interleave(self.memory.N, dim=1)  # (T, vis*N)
        if self.cpu_step is not None and T <= self.cpu_step.MAX_ROWS:
            logits = self.cpu_step(chunk, start, self.cache, xkv, xmask, row)
            self.cache.length = start + T
            return logits
        ids = torch.tensor([chunk], device=dev)
        pos = torch.arange(start, start + T, device=dev)[None]
        if xkv is not None and xkv[0][0].dtype != self.dtype:  # a bfloat16 memory (engine.cpustep)
            xkv = [(k.to(self.dtype), v.to(self.dtype)) for k, v in xkv]
        if xmask is not None:
            xmask = xmask[None, None]  # (1, 1, T, vis*N)
        r = (
            row[None]
            if row is not None
            else torch.full((1, T, 1), float(bool(vis)), dtype=self.dtype, device=dev)
        )
        with _no_cudnn_attention(dev):
            h = m.forward_text(ids, pos, xkv, xmask, r, r, cache=self.cache.layers(), start=start)
        self.cache.length = start + T
        return m.lm_head(h[0, -1])

    def _compact(self) -> None:
        """Bound the text context: keep prefix + current question + recent tail; re-position frames."""
        ids = self.ids + self.pending
        P0 = len(self.prefix_ids)
        budget = self.cfg.max_context // 2
        q = self.question_span
        qids = ids[q[0] : q[1]] if q is not None else []
        tail_start = max(P0, len(ids) - budget + len(qids) + 1)
        # start the tail at a frame boundary so it reads like the protocol
        while tail_start < len(ids) and ids[tail_start] != self.tok.image_id:
            tail_start += 1
        if q is not None and q[0] >= tail_start - 1:
            qids = []  # the question is already in the tail
        new = list(self.prefix_ids) + ([self.tok.eot_id] + qids if qids else []) + ids[tail_start:]
        # kept frames: those whose <|image|> is in the kept tail (committed or pending)
        shift = len(new) - (len(ids) - tail_start)
        keep = {}
        for pos, f in self.frame_at.items():
            if pos >= tail_start:
                keep[f] = pos - tail_start + shift
        self.memory.reposition(self.model, keep)
        self.frame_at = {p: j for j, (p, _f) in enumerate(sorted((p, f) for f, p in keep.items()))}
        n_committed = len(self.ids)
        pend_rel = [(i + n_committed - tail_start + shift, k, v) for i, k, v in self.pending_frames]
        pend_rel = [f for f in pend_rel if f[0] >= shift]
        self.question_span = (
            (P0 + 1, P0 + 1 + len(qids))
            if qids
            else (
                (q[0] - tail_start + shift, q[1] - tail_start + shift)
                if q is not None and q[0] >= tail_start
                else None
            )
        )
        self.ids = []
        self.cache.reset()
        self.pending = new
        # pending frames now index into the new pending list
        self.pending_frames = pend_rel
        self.compactions += 1


def _trim_heap() -> None:
    """Hand the re-prefill's freed scratch memory back to the OS (glibc keeps it otherwise, which reads
    as a resident-memory step between two compactions of a long stream). Rare: once per compaction."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, Windows, musl): nothing to do


def _no_cudnn_attention(dev):
    """Prefill chunks have ever-new shapes (the cache grows by a few tokens each time); cuDNN's
    attention builds and keeps a plan per shape, which grew host memory by ~100 MB per stream minute
    on an H100. Flash / memory-efficient / math kernels keep no plans. The fixed-shape decode step
    (one shape, one plan) keeps cuDNN, its fastest kernel for masked GQA."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class _Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0
