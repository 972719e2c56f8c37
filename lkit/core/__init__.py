"""Facts and helpers every stage of the pipeline shares, low enough that any of them may import it.

One place each: LinuxKit's fixed build time (`buildtime`), file digests and atomic writes (`files`).
Nothing here imports the rest of lkit.
"""
