"""Text in and out of the engine: a checkpoint's tokenizer, stop ids and chat template
(``tokenizer``), and the untrusted chat template rendered under time and size limits
(``chat_template``)."""
