"""process_results for the held-out perplexity task (val_ppl.yaml).

The same accounting as lm-eval's wikitext task (lm_eval/tasks/wikitext/preprocess_wikitext.py):
words = len(re.split(r"\\s+", text)), bytes = UTF-8 length; lm-eval's weighted_perplexity /
bits_per_byte aggregations then give exp(-sum ll / sum words), exp(-sum ll / sum bytes) and
-sum ll / (sum bytes * ln 2). Only the field name differs ("text" instead of "page").
"""
import re


def process_results(doc, results):
    (loglikelihood,) = results
    text = doc["text"]
    n_words = len(re.split(r"\s+", text))
    n_bytes = len(text.encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, n_words),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }
