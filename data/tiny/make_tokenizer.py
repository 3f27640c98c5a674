"""Train the tiny byte-level BPE tokenizer (data/tiny/tokenizer/) used by the quickstart
and the tests, with a ChatML chat template like Qwen2's.

Byte-level, so any text encodes (unknown words fall back to bytes). Trained on the bundled
sample manifest, the task prompts and the label names. Run from the repository root:

    python data/tiny/make_tokenizer.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from reasoning.tasks.prompts import INSTRUCTIONS

HERE = Path(__file__).resolve().parent
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LABELS = ["neutral", "happy", "angry", "sad", "joy", "surprise", "anger", "sadness", "disgust",
          "fear", "boredom", "happiness"]


def corpus() -> list[str]:
    rows = [json.loads(line) for line in (HERE.parent / "samples" / "manifest.jsonl").open()]
    texts = [r["transcript"] for r in rows] + [r["rationale"]["text"] for r in rows]
    texts += list(INSTRUCTIONS.values()) + LABELS + ["user", "assistant", "system"]
    return texts * 4


def main() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=SPECIAL[1:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(HERE / "tokenizer")
    print(f"saved a {len(fast)}-token tokenizer to {HERE / 'tokenizer'}")


if __name__ == "__main__":
    main()
