"""What speaks Pulumi's formats: engine emulation, the preview file and its plan report, and
the package schema."""
