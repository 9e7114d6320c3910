"""The requests ``promptcache bench`` sends: deterministic filler prompts and a chat session.

Filler text is drawn from a fixed word list with a seeded generator, so every
run sends the same prompts and the numbers of two runs compare. A unique
``nonce`` at the very start of a system prompt makes its first KV block (and
so every later one) differ from anything cached before: that is how a miss is
forced without clearing the engine's cache.
"""

from __future__ import annotations

import random

from promptcache.request import (
    CacheControl,
    ChatRequest,
    Message,
    SamplingParams,
    TextBlock,
)

_VOCABULARY = """
    the customer account invoice order shipment warehouse product service team
    report policy refund payment delivery address support ticket manager system
    update release version feature request response record detail schedule meeting
    review quality standard process document section table figure value price
    discount month year week day time number item list note summary issue status
    priority contract region market sales budget forecast target result plan project
    task owner partner supplier stock level store network server backup security
    access user group role permission audit log event alert metric cost saving rate
"""
_WORDS = tuple(_VOCABULARY.split())

QUESTIONS = (
    "What is the refund policy for damaged items?",
    "How do I change the delivery address of an order?",
    "Which team owns the warehouse stock reports?",
    "Summarise the security section in one sentence.",
    "When are budget forecasts reviewed?",
    "Who approves a contract with a new supplier?",
    "How long are audit logs kept?",
    "What does priority one mean for a support ticket?",
    "How are discounts applied to invoices?",
    "Which metric tracks delivery quality?",
    "Can a manager grant admin access?",
    "What happens when a payment fails twice?",
)


def filler(words: int, *, seed: int) -> str:
    """``words`` words of deterministic, sentence-shaped filler text."""
    rng = random.Random(seed)
    sentences: list[str] = []
    remaining = words
    while remaining > 0:
        length = min(remaining, rng.randint(8, 16))
        sentence = " ".join(rng.choice(_WORDS) for _ in range(length))
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        remaining -= length
    return " ".join(sentences)


def system_prompt(words: int, *, nonce: str, seed: int = 0) -> str:
    """A support-assistant system prompt with a reference manual of ``words`` filler words."""
    header = f"[{nonce}] You are a support assistant. Answer briefly from this manual.\n\n"
    return header + filler(words, seed=seed)


def single_turn(
    *, model: str, system: str, question: str, max_tokens: int, cache_system: bool = False
) -> ChatRequest:
    """One question after ``system``; greedy so runs are repeatable."""
    control = CacheControl(ttl="5m") if cache_system else None
    return ChatRequest(
        model=model,
        system=(TextBlock(text=system, cache_control=control),),
        messages=(Message(role="user", content=(TextBlock(text=question),)),),
        sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens),
    )


def session_turn(
    *,
    model: str,
    system: str,
    history: tuple[Message, ...],
    question: str,
    max_tokens: int,
    explicit_breakpoints: bool,
) -> ChatRequest:
    """The next turn of a conversation.

    With ``explicit_breakpoints`` (Anthropic style) the system prompt and the
    new user message carry ``cache_control`` (5m), the pattern Anthropic
    documents for multi-turn chats; otherwise caching is implicit (OpenAI, GLM).
    """
    control = CacheControl(ttl="5m") if explicit_breakpoints else None
    user = Message(role="user", content=(TextBlock(text=question, cache_control=control),))
    return ChatRequest(
        model=model,
        system=(TextBlock(text=system, cache_control=control),),
        messages=(*history, user),
        sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens),
    )


def strip_cache_control(message: Message) -> Message:
    """``message`` without breakpoints, for the history of later turns (at most 4 allowed)."""
    blocks = tuple(
        TextBlock(text=b.text) if isinstance(b, TextBlock) else b for b in message.content
    )
    return Message(role=message.role, content=blocks)
