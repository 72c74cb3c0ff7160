#!/usr/bin/env bash
# Creates an EMR cluster suited to the platform. Set the variables, then run it once.
# Needs: the AWS CLI with credentials allowed to create EMR clusters, the default EMR roles
# (`aws emr create-default-roles`), the package installed in .venv, and the bootstrap files staged
# (docs/deploy-emr.md). x86_64 instances only: the release's lock holds x86_64 wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
BUCKET="${BUCKET:?set BUCKET to your S3 bucket}"
PREFIX="${PREFIX:-fruits-platform}"
REGION="${REGION:-eu-west-1}"
SUBNET="${SUBNET:?set SUBNET to a subnet id (a private subnet works: nodes download nothing)}"
FRUITS="${FRUITS:-.venv/bin/fruits-platform}"
RELEASE="${RELEASE:-emr-spark-8.0.0}"
MASTER_TYPE="${MASTER_TYPE:-m5.xlarge}"
CORE_TYPE="${CORE_TYPE:-m5.2xlarge}"
CORE_COUNT="${CORE_COUNT:-2}"
IDLE_SECONDS="${IDLE_SECONDS:-3600}"
CONFIGURATIONS="$("$FRUITS" emr-configurations --release "$RELEASE")"  # fails here for an unsupported release

aws emr create-cluster \
  --region "$REGION" \
  --name "fruits-platform" \
  --release-label "$RELEASE" \
  --applications Name=Spark \
  --instance-groups \
      "InstanceGroupType=MASTER,InstanceCount=1,InstanceType=${MASTER_TYPE}" \
      "InstanceGroupType=CORE,InstanceCount=${CORE_COUNT},InstanceType=${CORE_TYPE}" \
  --ec2-attributes "SubnetId=${SUBNET},InstanceProfile=EMR_EC2_DefaultRole" \
  --service-role EMR_DefaultRole \
  --log-uri "s3://${BUCKET}/${PREFIX}/emr-logs/" \
  --bootstrap-actions "Path=s3://${BUCKET}/${PREFIX}/bootstrap/install.sh,Name=install-fruits-platform,Args=[s3://${BUCKET}/${PREFIX}/bootstrap/${RELEASE}.txt]" \
  --configurations "$CONFIGURATIONS" \
  --auto-termination-policy "IdleTimeout=${IDLE_SECONDS}" \
  --query ClusterId --output text
