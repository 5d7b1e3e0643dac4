//! What a sign-in failure means and how to fix it, from the Entra ID error code
//! (`AADSTSnnnn` in the description, or `error_codes`) or a managed-identity endpoint's
//! message. Pure: text in, text out.

/// The AADSTS code in a token endpoint's description, if any.
pub fn aadsts_code(description: &str) -> Option<u32> {
    let at = description.find("AADSTS")? + "AADSTS".len();
    let digits: String = description[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// (what it means, how to fix it) for a failed token request.
pub fn token_failure(error: &str, description: &str) -> (String, String) {
    let (meaning, fix): (&str, &str) = match aadsts_code(description) {
        Some(7000215) => (
            "wrong client secret",
            "copy the secret's Value (not its Secret ID) from the app registration's Certificates & secrets into the variable or file rulebridge reads",
        ),
        Some(7000222) => (
            "the client secret has expired",
            "create a new client secret on the app registration and replace the old one where rulebridge reads it",
        ),
        Some(700016) => (
            "the application is not known in this tenant",
            "check credentials.client_id (the app's Application (client) ID) and defender.tenant_id; a multi-tenant app needs admin consent in this tenant first",
        ),
        Some(90002) | Some(900023) => (
            "the tenant does not exist in this cloud",
            "check defender.tenant_id (the Directory (tenant) ID) and [cloud] name",
        ),
        Some(700027) if description.contains("expired") => (
            "the certificate has expired",
            "create a new certificate, upload its public part to the app registration (Certificates & secrets) and point certificate_path at the new key and certificate",
        ),
        Some(700027) => (
            "the certificate is not registered on the app, or the assertion's signature is wrong",
            "upload the certificate's public part (.cer/.pem) to the app registration's Certificates & secrets, and make sure certificate_path holds the matching private key",
        ),
        Some(700024) => (
            "the client assertion is outside its valid time (an expired federated token, or a wrong clock)",
            "workload identity: check that the kubelet refreshes the projected token (AZURE_FEDERATED_TOKEN_FILE); otherwise synchronise this machine's clock",
        ),
        Some(700211) | Some(700212) | Some(700213) | Some(70021) => (
            "no federated credential on the app matches the presented token (issuer, subject or audience)",
            "add a federated credential to the app registration (or managed identity) with the cluster's OIDC issuer URL, subject system:serviceaccount:<namespace>:<service account>, audience api://AzureADTokenExchange",
        ),
        Some(500011) => (
            "the resource is not known in this tenant: usually the wrong cloud",
            "set [cloud] name to the tenant's cloud (public, usgov or usgov-dod)",
        ),
        Some(70011) => (
            "the scope is not valid",
            "check [cloud] graph_resource and arm_resource: a scope is {resource}/.default",
        ),
        Some(65001) => (
            "consent is missing",
            "an administrator grants admin consent for the app's API permissions (Entra ID > App registrations > API permissions)",
        ),
        Some(7000112) | Some(7000114) => (
            "the application is disabled",
            "enable the service principal (Enterprise applications > Properties > Enabled for users to sign-in)",
        ),
        _ if description.contains("Identity not found") => (
            "no managed identity with that client id is assigned to this resource",
            "assign the managed identity to the VM or app, or fix credentials.client_id (none: the system-assigned identity)",
        ),
        _ if description.contains("metadata header") || error == "unreachable" && description.contains("managed identity") => (
            "the managed identity endpoint cannot be reached",
            "managed identity works only on an Azure resource with an identity assigned; elsewhere choose another credential kind",
        ),
        _ if error == "unreachable" => (
            "the token endpoint cannot be reached",
            "check the network path and proxy to the sign-in host ([cloud] authority_host)",
        ),
        _ if error == "federated_token_file" => (
            "the federated token file cannot be read",
            "check that the pod has the azure.workload.identity/use label and the service account annotation, so the webhook mounts the token",
        ),
        _ => ("the token request was refused", "read the error above; `AADSTS` codes are listed at https://login.microsoftonline.com/error"),
    };
    (meaning.to_string(), fix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_and_explained() {
        assert_eq!(
            aadsts_code("AADSTS7000215: Invalid client secret provided."),
            Some(7000215)
        );
        assert_eq!(aadsts_code("nothing"), None);
        let (meaning, fix) = token_failure(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
        assert_eq!(meaning, "wrong client secret");
        assert!(fix.contains("Value (not its Secret ID)"));
        let (meaning, _) = token_failure(
            "invalid_client",
            "AADSTS700027: Client assertion failed signature validation. [Reason - The key used is expired.]",
        );
        assert_eq!(meaning, "the certificate has expired");
        let (meaning, _) = token_failure("invalid_request", "Identity not found (HTTP 400)");
        assert!(meaning.contains("no managed identity"));
    }
}
