"""The built-in release-gate suite, collected by the plugin when ``--unlearn-model`` is given."""
