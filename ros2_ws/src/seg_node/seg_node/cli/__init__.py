"""Console scripts: one thin file each over the layers below."""
