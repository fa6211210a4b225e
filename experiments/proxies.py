"""The experiments' side of the Crystal-GFN proxies: train a missing one, visibly.

The library only loads proxies (``hgfn_jax.models.proxy.load_proxy`` raises when the checkpoint is missing). An
experiment that needs one calls :func:`load_or_train_proxy`, which loads the cached checkpoint or, on a fresh
clone, says that it trains it (a few minutes on a CPU) and caches it, so ``make train EXP=crystal_gfn_fe`` still
runs from scratch.
"""

from __future__ import annotations

from hgfn_jax.models.proxy import (
    Proxy,
    ProxyConfig,
    ProxyNotTrainedError,
    load_proxy,
    proxy_dir,
    resolve_config,
    train_command,
)


def load_or_train_proxy(target: str, config: ProxyConfig | str | None = None, verbose: bool = True) -> Proxy:
    """The trained ``target`` proxy for ``config`` (a ``ProxyConfig``, "fast", "paper" or None = "fast"),
    trained on the shared data set and cached first if it is missing (printed, with where it goes)."""
    config = resolve_config(target, config)
    try:
        proxy = load_proxy(target, config)
    except ProxyNotTrainedError:
        from hgfn_jax.models import proxy_train

        path = proxy_dir(config)
        print(f"proxy: no trained {target} proxy ({config.name!r}) at {path}; training it now "
              f"(what `{train_command(config)}` does, a few minutes on a CPU)", flush=True)
        return proxy_train.train_and_save(config, path=path, verbose=verbose)
    if verbose:
        print(f"proxy: loaded the {target} proxy ({config.name!r}) from {proxy.path}", flush=True)
    return proxy
