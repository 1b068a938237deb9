"""The real-time token protocol (Llama-3 chat template), as strings.

Owns the special-token names, the real-time system prompt and the text pieces that open a stream and
a question turn. It knows nothing of token ids (the tokenizer maps names to ids) nor of models.

A stream, as the reference data spells it (ARCHITECTURE 1.4):

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\nSYSTEM<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n
    <|silence|><|image|><|silence|><|image|> ...
    <|eot_id|><|start_header_id|>user<|end_header_id|>\\n\\nQUESTION<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n<|silence|><|image|>Answer ...

In data files a frame is written `<|video|>` (1 frame each); the model sees `<|image|>`.
"""

from __future__ import annotations

BOS = "<|begin_of_text|>"
EOT = "<|eot_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
SILENCE = "<|silence|>"
VIDEO = "<|video|>"  # frame marker in data records
IMAGE = "<|image|>"  # frame token in the model's stream
ELLIPSIS = "<|...|>"
PAD = "<|finetune_right_pad_id|>"

# Llama-3 ids of the tokens MOSS-Video-Preview uses; a tokenizer that lacks the names gets these.
LLAMA3_IDS = {
    BOS: 128000,
    "<|end_of_text|>": 128001,
    PAD: 128004,
    START_HEADER: 128006,
    END_HEADER: 128007,
    "<|eom_id|>": 128008,
    EOT: 128009,
    SILENCE: 128011,
    ELLIPSIS: 128012,
    VIDEO: 128255,
    IMAGE: 128256,
}

SPECIAL_TOKENS = [BOS, "<|end_of_text|>", PAD, START_HEADER, END_HEADER, EOT, SILENCE, ELLIPSIS, VIDEO, IMAGE]

REALTIME_SYSTEM_PROMPT = (
    "You are a helpful AI assistant. You perceive and understand the surrounding environment in "
    "real-time through the camera and interact with the user. Whether or not the user actively asks "
    "questions, you continuously observe and analyze visual information, maintaining awareness of the "
    "environment.\n\nCore Abilities:\n- Continuous Perception: Always observe and analyze the visual "
    "information captured by the camera in real-time. This perception does not stop even when there is "
    "no user interaction.\n- Observation-Based Answers: All answers must be based on visual "
    "observations, including both historical and real-time data. Do not make guesses without evidence "
    "from visual input.\n- Dynamic Adjustment: When you observe changes relevant to the user's "
    "question, promptly update and adjust your answers to ensure timeliness and accuracy.\n\n"
    "Interaction Rules:\n- Always base your answers on observed visual information.\n- If you notice "
    "significant changes related to the user's question, proactively and promptly update your answer."
    "\n- When you are unable to answer or have finished answering, output `<|silence|>` directly.\n\n"
    'Your goal is to be the user\'s reliable "eyes", helping them understand and perceive the world '
    "around them."
)


def header(role: str) -> str:
    """`<|start_header_id|>role<|end_header_id|>\\n\\n`"""
    return f"{START_HEADER}{role}{END_HEADER}\n\n"


def stream_prefix_parts(system: str) -> list[tuple[str, bool]]:
    """Pieces that open a real-time stream, as (text, is_special_markup).

    Text pieces marked False are user/system content and must be tokenised literally (never parse
    special-token names inside them); pieces marked True are protocol markup.
    """
    return [
        (BOS + header("system"), True),
        (system, False),
        (EOT + header("user") + EOT + header("assistant"), True),
    ]


def question_parts(question: str, close_assistant: bool = True) -> list[tuple[str, bool]]:
    """Pieces of a barge-in: close the assistant turn, the user's question, open a new assistant turn."""
    return [
        ((EOT if close_assistant else "") + header("user"), True),
        (question, False),
        (EOT + header("assistant"), True),
    ]
