#!/usr/bin/env bash
# Creates an EMR cluster suited to the platform. Edit the variables, then run it once.
# Needs: the AWS CLI with credentials allowed to create EMR clusters, the default EMR roles
# (`aws emr create-default-roles`), and the bootstrap files staged (see README, "Deploy to EMR").
set -euo pipefail
BUCKET="${BUCKET:?set BUCKET to your S3 bucket}"
PREFIX="${PREFIX:-fruits-platform}"
REGION="${REGION:-eu-west-1}"
SUBNET="${SUBNET:?set SUBNET to a subnet id (a private subnet works: executors need no internet)}"

aws emr create-cluster \
  --region "$REGION" \
  --name "fruits-platform" \
  --release-label emr-7.13.0 \
  --applications Name=Spark \
  --instance-groups \
      InstanceGroupType=MASTER,InstanceCount=1,InstanceType=m5.xlarge \
      InstanceGroupType=CORE,InstanceCount=2,InstanceType=m5.2xlarge \
  --ec2-attributes "SubnetId=${SUBNET},InstanceProfile=EMR_EC2_DefaultRole" \
  --service-role EMR_DefaultRole \
  --log-uri "s3://${BUCKET}/${PREFIX}/emr-logs/" \
  --bootstrap-actions "Path=s3://${BUCKET}/${PREFIX}/bootstrap/install.sh,Name=install-fruits-platform,Args=[s3://${BUCKET}/${PREFIX}/bootstrap/requirements.txt]" \
  --configurations '[{"Classification":"spark-defaults","Properties":{"spark.task.cpus":"1","spark.sql.execution.arrow.maxRecordsPerBatch":"64","spark.executorEnv.TF_CPP_MIN_LOG_LEVEL":"2"}}]' \
  --auto-termination-policy IdleTimeout=3600 \
  --query ClusterId --output text
