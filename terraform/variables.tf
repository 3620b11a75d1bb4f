variable "region" {
  description = "AWS region for every resource in this stack."
  type        = string
  default     = "us-east-1"
}

variable "project" {
  description = "Project name, used as the prefix of resource names and as a tag."
  type        = string
  default     = "health-warehouse"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$", var.project))
    error_message = "project must be 3-32 characters of lower-case letters, digits and hyphens (it becomes part of an S3 bucket name)."
  }
}

variable "environment" {
  description = "Deployment environment: dev, staging or prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

# --- Landing bucket --------------------------------------------------------------------------------------

variable "landing_bucket_name" {
  description = "Name of the landing bucket. Null derives <project>-<environment>-landing-<account id>, which is globally unique."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "KMS key for the landing bucket's default encryption. Null uses the AWS managed key aws/s3."
  type        = string
  default     = null
}

variable "archive_prefixes" {
  description = "Key prefixes of processed drops, moved to cheaper storage classes as they age. Null (the default) reads them from the contracts in elt/contracts/ (each archive_prefix up to its date); a list overrides them."
  type        = list(string)
  default     = null
}

variable "archive_infrequent_access_after_days" {
  description = "Days after which archived drops move to STANDARD_IA (30 at least)."
  type        = number
  default     = 30

  validation {
    condition     = var.archive_infrequent_access_after_days >= 30
    error_message = "S3 does not transition objects to STANDARD_IA before they are 30 days old."
  }
}

variable "archive_glacier_after_days" {
  description = "Days after which archived drops move to GLACIER_IR (still readable in milliseconds, for reprocessing)."
  type        = number
  default     = 180
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept before it expires (moves to archive/ leave one behind)."
  type        = number
  default     = 90
}

# --- Warehouse database ------------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC that holds the database and the workloads that connect to it."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the database, in at least two availability zones."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "An RDS subnet group needs subnets in at least two availability zones."
  }
}

variable "db_allowed_security_group_ids" {
  description = "Security groups (Airflow workers, the API) allowed to connect to the database on 5432."
  type        = list(string)
  default     = []
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage_gb" {
  description = "Initial storage in GiB; storage autoscaling may grow it up to db_max_allocated_storage_gb."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage_gb" {
  description = "Upper bound for storage autoscaling in GiB."
  type        = number
  default     = 500
}

variable "db_name" {
  description = "Database created with the instance (the warehouse). Airflow's metadata database is not created by this stack."
  type        = string
  default     = "warehouse"
}

variable "db_master_username" {
  description = "Master user name. Its password is generated and kept in AWS Secrets Manager by RDS; it never appears in Terraform files or state."
  type        = string
  default     = "warehouse_admin"
}

variable "db_multi_az" {
  description = "Standby in a second availability zone. Recommended for prod."
  type        = bool
  default     = false
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 14
}

variable "db_deletion_protection" {
  description = "Refuse to delete the instance until this is set to false and applied."
  type        = bool
  default     = true
}
