"""Provider adapters behind one protocol (``base.Provider``)."""
