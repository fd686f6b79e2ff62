"""The seed's ``process_registry`` module: ``python3 -m process_registry status|export|cancel``
runs ``gadugi status|export|cancel`` (see ``gadugi.compat``)."""

from gadugi.compat import process_registry_main

if __name__ == "__main__":
    process_registry_main()
