"""One module per VNL scheme."""
