"""vramplan's built-in plugins. They use the same hooks as third-party plugins and are registered
by name from :data:`vramplan.pluginhost.DEFAULT_PLUGINS`."""
