output "landing_bucket_name" {
  description = "Name of the landing bucket: S3_BUCKET for the ELT and Airflow."
  value       = aws_s3_bucket.landing.bucket
}

output "landing_bucket_arn" {
  description = "ARN of the landing bucket, for the IAM policies of the workloads that read and move drops."
  value       = aws_s3_bucket.landing.arn
}

output "db_endpoint" {
  description = "Database host:port (the DATABASE_URL host and port)."
  value       = aws_db_instance.warehouse.endpoint
}

output "db_address" {
  description = "Database host name alone (DBT_PG_HOST)."
  value       = aws_db_instance.warehouse.address
}

output "db_port" {
  description = "Database port."
  value       = aws_db_instance.warehouse.port
}

output "db_master_user_secret_arn" {
  description = "Secrets Manager secret holding the master user's generated credentials."
  value       = try(aws_db_instance.warehouse.master_user_secret[0].secret_arn, null)
}

output "db_security_group_id" {
  description = "Security group of the database; add workloads to db_allowed_security_group_ids to let them in."
  value       = aws_security_group.db.id
}
