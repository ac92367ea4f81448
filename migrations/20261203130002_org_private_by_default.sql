-- Organizations whose new repos are private unless the creator asks for a
-- public one (the Hub's "private repositories by default" Enterprise setting;
-- huggingface_hub's test_create_repo_private_by_default). Set with
-- `hub-api admin create-org --private-repos`.
ALTER TABLE namespaces ADD COLUMN private_by_default BOOLEAN NOT NULL DEFAULT false;
