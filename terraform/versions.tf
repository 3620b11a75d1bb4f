terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # State belongs in a remote, locked, encrypted backend before anyone else runs this. Fill in and
  # uncomment, then `terraform init -migrate-state`. Bucket and table are created outside this stack.
  # backend "s3" {
  #   bucket         = "<state-bucket>"
  #   key            = "health-warehouse/<environment>/terraform.tfstate"
  #   region         = "us-east-1"
  #   dynamodb_table = "<lock-table>"
  #   encrypt        = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
