"""What the CloudFormation estate costs: idle per month and per pipeline run (`make cost`)."""
