# The landing bucket's key prefixes, read from the drop contracts (elt/contracts/*.yml) so that the lifecycle
# rules follow the contracts instead of a list kept by hand. No provider: tests/test_deploy_static.py applies
# this module alone, offline, against a directory of contracts.

variable "contracts_dir" {
  description = "Directory of the drop contracts (*.yml)."
  type        = string
}

locals {
  contracts = [for f in sort(fileset(var.contracts_dir, "*.yml")) : yamldecode(file("${var.contracts_dir}/${f}"))]
}

output "archive_prefixes" {
  description = "Each contract's landing.archive_prefix up to its first {placeholder} (the part before the date), once each, sorted."
  value       = sort(distinct([for c in local.contracts : split("{", c.landing.archive_prefix)[0]]))
}
