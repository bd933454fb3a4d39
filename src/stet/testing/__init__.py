"""The store contract, for checking a store of your own (and stet's) with pytest.

Subclass :class:`StoreContract` in a test module and give it an ``open_store`` fixture:
a callable that returns a new handle on one fresh store (each call, the same store, as
another process would open it)::

    from stet.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def open_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "runs")

Every test then runs against that store: the five methods, the matching rules, tricky
and arbitrary (hypothesis) field names and values, handles following each other, threads
and processes calling one run, failures, and stet's own API over the store. What a store
declares in its :class:`~stet.backends.Capabilities` decides which behaviour is checked,
and a flag it does not declare is checked to behave as the default says (a store that
does not remove by function is checked to remove through :meth:`~stet.backends.Store.remove`).

The process test starts two processes with ``spawn`` and sends each the ``store_spec``
fixture's value, which they pass as ``@stet.once(store=...)``: by default a new handle,
``open_store()``, which must then pickle; override ``store_spec`` with the store's path
or URL if handles do not. ``STET_CONTRACT_EXAMPLES`` sets how many examples the property
test draws (25). Importing this module imports pytest and hypothesis; ``import stet``
does not import it.
"""

from __future__ import annotations

from ._contract import StoreContract

__all__ = ["StoreContract"]
